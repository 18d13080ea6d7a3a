"""Moved to ``fabric.testing.logs`` (shipped test helpers live in one package); re-exported here
so existing imports keep working."""

from ..testing.logs import crash, log_files, random_batch, segment_log_path

__all__ = ["crash", "log_files", "random_batch", "segment_log_path"]
