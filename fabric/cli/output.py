"""What the commands print on stdout: tables for people, JSON for scripts.

Rules (issue: tables cut at 80 columns as ``parti…``):

* never lose data: when stdout is not a terminal (a pipe, a file) a table is as wide as its
  widest row; on a terminal, a table wider than the window wraps its cells (``fold``) instead
  of ending them in "…", and stderr suggests ``--output json``;
* cells are plain text, never rich markup, so a name with ``[brackets]`` prints as it is;
* JSON is written with ``json.dumps``, one document (or one line per record), nothing else on
  stdout, so ``| jq`` always works.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

# Wide enough for any table a command prints; rich pads a table only to its own width.
UNLIMITED_WIDTH = 1_000_000


def _stdout_console() -> Console:
    tty = sys.stdout.isatty()
    return Console(highlight=False, soft_wrap=True, width=None if tty else UNLIMITED_WIDTH)


out = _stdout_console()
_err = Console(stderr=True, highlight=False, soft_wrap=True)


def table(*columns: str) -> Table:
    """A borderless table whose cells wrap rather than being cut."""
    t = Table(box=None, padding=(0, 1), pad_edge=False)
    for name in columns:
        t.add_column(name, overflow="fold")
    return t


def add_row(t: Table, *cells: Any) -> None:
    t.add_row(*(Text("-" if c is None else str(c)) for c in cells))


def print_table(t: Table) -> None:
    if not out.is_terminal:  # no trailing padding in files and pipes (diff, awk, grep -x)
        with out.capture() as captured:
            out.print(t)
        sys.stdout.write("".join(line.rstrip() + "\n" for line in captured.get().splitlines()))
        sys.stdout.flush()
        return
    out.print(t)
    if out.measure(t, options=out.options.update_width(UNLIMITED_WIDTH)).maximum > out.width:
        _err.print("(the table is wider than the terminal: its cells are wrapped; "
                   "--output json prints every field on one line)", style="dim")


def print_json(value: Any) -> None:
    sys.stdout.write(json.dumps(value, ensure_ascii=False) + "\n")
    sys.stdout.flush()


def print_text(line: str) -> None:
    """A line of plain text (no markup interpreted)."""
    out.print(Text(line))
