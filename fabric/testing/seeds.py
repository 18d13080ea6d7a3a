"""Seeds of the seeded tests, and how to replay one.

Every randomised test (the ``sim`` tier, model tests of the log, the coordinator's churn run) is
parametrised by ``seeds(default)``: normally the default seeds, but only seed N when pytest runs
with ``--seed N`` (``tests/conftest.py`` calls ``replay``).  A failure's test id names its seed
(``test_committed_records_survive_leader_changes[3]``), so

    python -m pytest tests/test_replication_sim.py --seed 3

reruns exactly that run, step by step the same (the tests draw every choice from
``random.Random(seed)``, never from the global generator or the clock).
"""

from __future__ import annotations

from typing import Iterable

_replay: int | None = None


def replay(seed: int | None) -> None:
    """Run only ``seed`` in every seeded test from now on (None: back to the defaults)."""
    global _replay
    _replay = seed


def seeds(default: Iterable[int]) -> list[int]:
    """The seeds a seeded test runs: ``default``, or only the one being replayed."""
    return [_replay] if _replay is not None else list(default)
