"""Shared fixtures: every broker process a test starts is SIGKILLed and reaped, pass or fail."""

from __future__ import annotations

import pathlib

import pytest

from fabric.testing import BrokerProcess

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
