"""The broker's descriptor budget (fabric/broker/descriptors.py)."""

from __future__ import annotations

import resource
import subprocess
import sys

from fabric.broker.descriptors import RESERVED_DESCRIPTORS, segment_file_budget
from fabric.log.handles import MIN_CAPACITY
from fabric.protocol.limits import Limits


def test_budget_leaves_room_for_connections_and_the_rest():
    limits = Limits()  # connections_max 1000, segment_files_open_max 10000
    assert segment_file_budget(limits, 4096) == 4096 - 1000 - RESERVED_DESCRIPTORS
    assert segment_file_budget(limits, 1024) == 512  # the reserve takes at most half
    assert segment_file_budget(limits, 1 << 20) == limits.segment_files_open_max
    assert segment_file_budget(Limits(segment_files_open_max=100), 4096) == 100
    assert segment_file_budget(limits, 10) == MIN_CAPACITY


def test_start_up_raises_the_soft_limit_to_the_hard_one():
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    hard = 2048 if hard == resource.RLIM_INFINITY or hard > 2048 else hard  # (lowering it is allowed)

    def low_soft_limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(256, hard), hard))

    out = subprocess.run(
        [sys.executable, "-c", "from fabric.broker.descriptors import raise_nofile_limit; print(raise_nofile_limit())"],
        preexec_fn=low_soft_limit, capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == f"({hard}, {hard})"
