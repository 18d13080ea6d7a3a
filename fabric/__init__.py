"""Fabric: a durable, partitioned event log over ZeroMQ."""

__version__ = "0.1.0"
