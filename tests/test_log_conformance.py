"""Every ``LogStore`` backend passes the same conformance suite (``fabric.testing.log_conformance``):
the file-backed ``PartitionLog`` and the in-memory ``MemoryLog``."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from fabric.log import LogConfig, PartitionLog
from fabric.log.epoch_log import EpochLog
from fabric.log.memory import MemoryLog
from fabric.log.store import LeaderEpochs, LogStore, ReplicaLogStore
from fabric.records.batch import encode_batch
from fabric.testing.log_conformance import EPOCH_CHECKS, LOG_CHECKS, check_model
from fabric.testing.logs import crash
from fabric.testing.seeds import seeds


class FileLogs:
    """``PartitionLog`` in fresh directories under ``tmp_path``."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._n = itertools.count()

    def open(self, config: LogConfig, now_ms: int) -> PartitionLog:
        return PartitionLog.open(self.root / f"log{next(self._n)}", config, now_ms)

    def restart(self, log: PartitionLog, now_ms: int) -> PartitionLog:
        log.close()
        return PartitionLog.open(log.directory, log.config, now_ms)

    def crash(self, log: PartitionLog, now_ms: int) -> PartitionLog:
        crash(log)
        return PartitionLog.open(log.directory, log.config, now_ms)


class EpochFileLogs(FileLogs):
    """``PartitionLog`` with a ``LeaderEpochFile``, through ``EpochLog``."""

    def open(self, config: LogConfig, now_ms: int) -> EpochLog:
        return EpochLog.open(self.root / f"log{next(self._n)}", config, now_ms)

    def restart(self, log: EpochLog, now_ms: int) -> EpochLog:
        log.close()
        return EpochLog.open(log.directory, log.config, now_ms)

    def crash(self, log: EpochLog, now_ms: int) -> EpochLog:
        crash(log.log)
        return EpochLog.open(log.directory, log.config, now_ms)


class MemoryLogs:
    def open(self, config: LogConfig, now_ms: int) -> MemoryLog:
        return MemoryLog(config, now_ms)

    def restart(self, log: MemoryLog, now_ms: int) -> MemoryLog:
        log.close()
        return log.reopened()

    def crash(self, log: MemoryLog, now_ms: int) -> MemoryLog:
        return log.crashed()


@pytest.fixture(params=["file", "file+epochs", "memory"])
def factory(request, tmp_path):
    return {"file": FileLogs, "file+epochs": EpochFileLogs}[request.param](tmp_path) \
        if request.param != "memory" else MemoryLogs()


@pytest.mark.parametrize("check", LOG_CHECKS, ids=lambda c: c.__name__)
def test_conformance(factory, check):
    check(factory)


@pytest.mark.parametrize("seed", seeds(range(8)))
def test_model(factory, seed):
    check_model(factory, seed)


@pytest.mark.parametrize("check", EPOCH_CHECKS, ids=lambda c: c.__name__)
@pytest.mark.parametrize("backend", ["memory", "file+epochs"])
def test_epochs(check, backend, tmp_path):
    """(PartitionLog alone has no epoch table: ``EpochLog`` gives it a ``LeaderEpochFile``.)"""
    check(MemoryLog if backend == "memory" else EpochFileLogs(tmp_path).open)


def test_the_epoch_file_follows_the_log_through_restarts_and_crashes(tmp_path):
    logs = EpochFileLogs(tmp_path)
    log = logs.open(LogConfig(), 0)
    for epoch in (1, 1, 2, 4):
        log.append(bytearray(encode_batch([0], [None], [b"e%d" % epoch])), 0, leader_epoch=epoch)
    log = logs.restart(log, 0)
    assert [tuple(e) for e in log.leader_epochs()] == [(1, 0), (2, 2), (4, 3)]
    assert log.end_offset_for_epoch(2) == (2, 3)
    log.flush()
    crash(log.log)
    (log.directory / "00000000000000000000.log").write_bytes(  # the last batch did not reach the disk
        (log.directory / "00000000000000000000.log").read_bytes()[:-1])
    log = EpochLog.open(log.directory, log.config, 0)
    assert log.end_offset == 3 and [tuple(e) for e in log.leader_epochs()] == [(1, 0), (2, 2)]
    assert EpochLog.open(log.directory, log.config, 0).leader_epochs() == log.leader_epochs()  # cut on disk too
    log.close()


def test_both_backends_satisfy_the_protocol(tmp_path):
    plog = PartitionLog.open(tmp_path / "p", LogConfig(), 0)
    mlog = MemoryLog(LogConfig())
    assert isinstance(plog, LogStore) and isinstance(mlog, LogStore)
    assert isinstance(mlog, ReplicaLogStore) and isinstance(mlog, LeaderEpochs)
    assert not isinstance(plog, LeaderEpochs)  # this test changes when the file log gets its table
    elog = EpochLog.open(tmp_path / "e", LogConfig(), 0)
    assert isinstance(elog, ReplicaLogStore)
    plog.close()
    elog.close()
