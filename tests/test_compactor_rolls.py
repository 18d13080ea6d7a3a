"""The compactor's choice of which logs to look at again (``fabric.broker.background.Compactor``)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from fabric.broker import background

pytestmark = pytest.mark.unit


class _Log:
    """Just what the compactor reads of a log: its config, segments and offsets."""

    def __init__(self) -> None:
        self.config = SimpleNamespace(compact=True)
        self.segment_count = 3
        self.active_base_offset = 200
        self.start_offset = 0

    def roll(self) -> None:
        self.segment_count += 1
        self.active_base_offset += 100


def test_a_roll_during_a_pass_brings_the_log_back_at_the_next_pass(monkeypatch):
    """A CI run once found a compacted topic never compacted: the writer rolled while a pass ran,
    the pass recorded the log as seen *with* that roll, and with no later roll the new closed
    segment waited forever."""
    plog = _Log()
    passes = []

    def fake_compact(log_, now_ms):
        passes.append(now_ms)
        if len(passes) == 1:
            log_.roll()  # the writer rolls while this pass runs
        return SimpleNamespace(retry_at_ms=None)

    monkeypatch.setattr(background, "compact", fake_compact)
    core = SimpleNamespace(topics=SimpleNamespace(all_logs=lambda: [("t", 0, plog)]))
    compactor = background.Compactor(core, 100)
    compactor.work(1_000)
    compactor.work(1_100)  # the roll during the first pass: looked at again
    compactor.work(1_200)  # nothing new since: skipped
    assert passes == [1_000, 1_100]
    plog.roll()
    compactor.work(1_300)
    assert passes == [1_000, 1_100, 1_300]
