"""A topic's configs in the cluster: the log settings every replica applies, plus the replication
settings the controller and the partition leader read.

Why split: ``LogConfig`` (``fabric/log/config.py``) refuses unknown keys, on purpose (a typo must not
silently keep data for ever), so a broker building a partition's ``LogConfig`` from the metadata
must first take out the keys that are not log settings (``split_configs``).  The controller writes
``min_insync_replicas`` into every topic's configs, so the image always says it.
"""

from __future__ import annotations

from typing import Any

from ..log.config import LogConfig
from ..protocol.errors import FabricError

__all__ = ["REPLICATION_CONFIG_KEYS", "check_topic_configs", "split_configs"]

# Topic configs the controller and the replication layer read; every other key is a LogConfig field.
REPLICATION_CONFIG_KEYS = ("min_insync_replicas", "unclean_leader_election", "replication_throttle_bytes")


def split_configs(configs: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(log configs for ``LogConfig.from_mapping``, replication configs) of a topic's overrides."""
    log_part = {k: v for k, v in configs.items() if k not in REPLICATION_CONFIG_KEYS}
    repl_part = {k: v for k, v in configs.items() if k in REPLICATION_CONFIG_KEYS}
    return log_part, repl_part


def check_topic_configs(configs: Any, replication_factor: int, default_min_insync_replicas: int) -> dict[str, Any]:
    """The validated overrides in canonical form, with ``min_insync_replicas`` always present
    (``default_min_insync_replicas`` capped at the replication factor unless given);
    INVALID_CONFIG naming the key otherwise."""
    if not isinstance(configs, dict):
        raise FabricError("INVALID_CONFIG", f"configs must be a map, not {type(configs).__name__}")
    log_part, repl = split_configs(configs)
    effective = LogConfig.from_mapping(log_part).to_mapping()
    out = {k: effective[k] for k in log_part}
    rf = replication_factor
    min_isr = repl.get("min_insync_replicas", min(default_min_insync_replicas, rf))
    if isinstance(min_isr, float) and min_isr.is_integer():
        min_isr = int(min_isr)
    if isinstance(min_isr, bool) or not isinstance(min_isr, int) or not 1 <= min_isr <= rf:
        raise FabricError("INVALID_CONFIG", f"topic config min_insync_replicas must be an integer in [1, {rf}] "
                                            f"(the replication factor), not {min_isr!r}")
    out["min_insync_replicas"] = min_isr
    if "unclean_leader_election" in repl:
        if not isinstance(repl["unclean_leader_election"], bool):
            raise FabricError("INVALID_CONFIG", "topic config unclean_leader_election must be true or false")
        out["unclean_leader_election"] = repl["unclean_leader_election"]
    if "replication_throttle_bytes" in repl:  # bytes/s a replica joining by reassignment copies (0: unlimited)
        rate = repl["replication_throttle_bytes"]
        if isinstance(rate, bool) or not isinstance(rate, int) or not 0 <= rate <= 2**40:
            raise FabricError("INVALID_CONFIG", "topic config replication_throttle_bytes must be an integer in "
                                                f"[0, 2**40] (bytes/s, 0: unlimited), not {rate!r}")
        out["replication_throttle_bytes"] = rate
    return out
