"""Progress bars of long CLI work, seen in a real terminal (tmux), and never in a pipe."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest

from fabric.testing.terminal import Terminal, wait_for

pytestmark = [pytest.mark.process,
              pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is installed by .ci/run")]


def test_producing_a_big_file_shows_a_progress_bar_on_the_terminal_only(broker, tmp_path):
    big = tmp_path / "big.txt"
    with big.open("w") as f:
        for i in range(200_000):
            f.write(f"k{i % 100}:value-{i}\n")
    cmd = [sys.executable, "-m", "fabric", "produce", "big", "--key-separator", ":", "--input", str(big),
           "-b", broker.bootstrap]
    term = Terminal([*cmd, ";", "sleep", "60"])
    try:
        term.wait("producing to big", "bytes read", timeout=30)
        term.wait("produced 200000 records to big", timeout=120)
        assert "producing to big" not in term.screen()  # transient: gone when done
    finally:
        term.close()
    piped = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert piped.returncode == 0 and "bytes read" not in piped.stderr  # stderr not a terminal: no bar


def test_consume_max_into_a_file_keeps_the_data_out_of_the_terminal(broker, tmp_path):
    subprocess.run([sys.executable, "-m", "fabric", "produce", "c", "-b", broker.bootstrap],
                   input="\n".join(str(i) for i in range(200_000)), text=True, check=True, timeout=120)
    out = tmp_path / "out.txt"
    term = Terminal([sys.executable, "-m", "fabric", "consume", "c", "--from-beginning", "--max", "200000",
                     "-b", broker.bootstrap, ">", str(out), ";", "sleep", "60"])
    try:
        wait_for("the records in the file", lambda: out.exists() and out.read_text().count("\n") == 200_000, 120)
        screen = term.screen()
        assert "consuming c" not in screen and "199999" not in screen  # the data went to the file only
    finally:
        term.close()
