"""Shared fixtures (every broker process a test starts is SIGKILLed and reaped, pass or fail), the
test tiers, and ``--seed``.

Tiers (pytest markers; README "Tests"):
- ``process``: real broker (or CLI, Node.js) processes on free loopback ports.  A test is in it
  when it uses the ``broker``/``brokers`` fixtures (directly or through another fixture) or its
  module says ``pytestmark = pytest.mark.process``;
- ``sim``: seeded deterministic simulations of several state machines over a fake network and a
  manual clock (marked ``pytest.mark.sim``);
- ``unit``: everything else: pure, in-process, fast.
``-m unit`` (or ``process``, ``sim``) runs one tier; ``--seed N`` runs every seeded test with
seed N only, to replay a failure (``fabric.testing.seeds``).
"""

from __future__ import annotations

import pathlib

import pytest

from fabric.testing import BrokerProcess
from fabric.testing.seeds import replay

TIERS = {
    "unit": "pure, in-process and fast: no broker process",
    "process": "real broker processes on free loopback ports (killed and reaped by the fixtures)",
    "sim": "seeded deterministic simulation; replay one run with --seed N",
}
PROCESS_FIXTURES = {"broker", "brokers", "cluster"}


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--seed", type=int, default=None, metavar="N",
                     help="run the seeded tests (sim tier, model tests) with seed N only: replays a failure")


def pytest_configure(config: pytest.Config) -> None:
    for name, what in TIERS.items():
        config.addinivalue_line("markers", f"{name}: {what}")
    replay(config.getoption("--seed"))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Every test in exactly one tier: the marked one, ``process`` when it uses a broker fixture,
    else ``unit``."""
    for item in items:
        tiers = {m.name for m in item.iter_markers() if m.name in TIERS}
        if not tiers:
            tier = "process" if PROCESS_FIXTURES & set(getattr(item, "fixturenames", ())) else "unit"
            item.add_marker(getattr(pytest.mark, tier))
        elif len(tiers) > 1:
            raise pytest.UsageError(f"{item.nodeid} is in tiers {sorted(tiers)}: mark one")

DATA = pathlib.Path(__file__).parent / "data"


@pytest.fixture
def brokers(tmp_path):
    """A factory: ``brokers(extra_args=[...])`` starts a broker on a free loopback port."""
    started: list[BrokerProcess] = []

    def start(extra_args=(), data_dir=None, wait=True) -> BrokerProcess:
        b = BrokerProcess(data_dir or tmp_path / f"data{len(started)}", extra_args=extra_args)
        started.append(b)
        return b.start(wait=wait)

    try:
        yield start
    finally:
        for b in started:
            b.kill()


@pytest.fixture
def broker(brokers) -> BrokerProcess:
    return brokers()


@pytest.fixture
def cluster(tmp_path):
    """A factory: ``cluster(nodes=3, **kwargs)`` configures a ``ClusterProcesses`` (not started);
    every process of every cluster made is SIGKILLed and reaped at teardown, pass or fail."""
    from fabric.testing.cluster import ClusterProcesses
    made: list[ClusterProcesses] = []

    def make(nodes: int = 3, **kwargs) -> ClusterProcesses:
        c = ClusterProcesses(tmp_path / f"cluster{len(made)}", nodes, **kwargs)
        made.append(c)
        return c

    try:
        yield make
    finally:
        for c in made:
            c.close()
