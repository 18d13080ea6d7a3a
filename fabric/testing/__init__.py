"""Helpers for tests (ours and users'): real broker processes on free loopback ports."""

from .processes import BrokerProcess, free_port

__all__ = ["BrokerProcess", "free_port"]
