"""Broker configuration: embedded defaults, a YAML file, then command-line overrides.

Why three layers: ``fabric broker`` must work with no file at all (the embedded single-node
default), operators keep a commented YAML under version control (``configs/broker.yaml``), and a
flag wins for one-off runs.  Unknown keys are errors, not warnings: a typo in a retention setting
must not silently keep data forever.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import yaml

from ..log.config import LogConfig
from ..protocol.limits import Limits

DEFAULT_PORT = 7171


class ConfigError(ValueError):
    """A broker config file or flag is wrong; the message says which key and why."""


@dataclass(frozen=True)
class BrokerConfig:
    node_id: int = 0
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    advertised_host: str | None = None  # what clients are told to connect to (default: host)
    data_dir: str = "./fabric-data"
    cluster_id: str | None = None  # generated and stored in data_dir on first start
    auto_create_topics: bool = True
    default_partitions: int = 1
    default_replication_factor: int = 1
    delete_topic_enable: bool = True
    offsets_topic_partitions: int = 16  # __consumer_offsets
    # An empty group's first rebalance waits this long for more members to join (Kafka's
    # group.initial.rebalance.delay.ms), so members started together land in one generation.
    group_initial_rebalance_delay_ms: int = 3000
    retention_check_interval_ms: int = 60_000
    flush_check_interval_ms: int = 100
    compaction_check_interval_ms: int = 15_000  # how often compacted topics' new segments are cleaned
    log_level: str = "INFO"
    # Prometheus text format on http://host:metrics_port/metrics; 0 = off (the default).
    metrics_port: int = 0
    # ---- cluster (SPEC "Cluster"; configs/cluster/ shows a commented 3-node setup).  With no
    # ``controller_voters`` the broker is today's single node: its own controller, every
    # partition local.  With them, it registers with the Raft controller quorum those voters form
    # (running a voter itself when its node_id is one of them) and replicates partitions.
    controller_voters: dict = field(default_factory=dict)  # node id -> "host:port" of its controller
    pub_port: int = 0  # where this broker publishes appended batches to followers (PUB)
    rack: str | None = None  # replicas of a partition go to different racks when racks suffice
    broker_heartbeat_ms: int = 250  # how often a broker tells the controller it is alive
    broker_session_timeout_ms: int = 1500  # silent this long: fenced, its leaderships move away
    replica_lag_ms: int = 10_000  # a follower not caught up this long leaves the ISR
    min_insync_replicas: int = 1  # default for topics: acks=all needs this many in-sync replicas
    topic_defaults: LogConfig = field(default_factory=LogConfig)
    limits: Limits = field(default_factory=Limits)

    @property
    def clustered(self) -> bool:
        return bool(self.controller_voters)

    @property
    def endpoint(self) -> str:
        return f"tcp://{self.host}:{self.port}"

    @property
    def advertised(self) -> str:
        """The host clients are told to use.  A wildcard bind address is no address to connect
        to, so without ``advertised_host`` it becomes this machine's name."""
        if self.advertised_host:
            return self.advertised_host
        if self.host in ("0.0.0.0", "*", "::", ""):
            return socket.getfqdn()
        return self.host

    def with_overrides(self, overrides: Mapping[str, Any]) -> "BrokerConfig":
        return _apply(self, overrides, "flag")


WILDCARD_HOSTS = ("0.0.0.0", "*", "::", "")


def is_loopback_host(host: str) -> bool:
    """Whether binding ``host`` keeps the broker to this machine: ``localhost``, ``lo`` (a ZeroMQ
    interface name) or a loopback address (127.0.0.0/8, ::1).  A wildcard, any other address and
    any other name are not (a name is not resolved: what it resolves to can change)."""
    bare = host.strip("[]")
    if bare in ("localhost", "lo"):
        return True
    try:
        return ipaddress.ip_address(bare).is_loopback
    except ValueError:
        return False


def exposure_warning(config: BrokerConfig) -> str | None:
    """The warning a broker logs at start when it listens beyond this machine without
    authentication, else None.  Why a warning and not an error: serving a LAN is legitimate
    (``--host 0.0.0.0`` is documented), but then anyone who can reach the port may read, write
    and delete every topic, and the operator must know that.  (There is no authentication yet, so
    every such bind warns; once CURVE/ZAP lands, a configured one silences this.)"""
    if is_loopback_host(config.host):
        return None
    where = "every interface" if config.host.strip("[]") in WILDCARD_HOSTS else f"address {config.host}"
    return (f"listening on {where} (port {config.port}) WITHOUT AUTHENTICATION: anyone who can reach this "
            f"port can read, write and delete every topic. Bind 127.0.0.1 (the default) unless the network "
            f"in front of the broker is trusted.")


def _apply(cfg: BrokerConfig, values: Mapping[str, Any], source: str) -> BrokerConfig:
    known = {f.name: f for f in dataclasses.fields(BrokerConfig)}
    changes: dict[str, Any] = {}
    for key, value in values.items():
        if value is None:
            continue
        if key not in known:
            raise ConfigError(f"{source}: unknown broker setting {key!r} (known: {', '.join(sorted(known))})")
        if key == "topic_defaults":
            if not isinstance(value, Mapping):
                raise ConfigError(f"{source}: topic_defaults must be a mapping")
            try:
                changes[key] = LogConfig.from_mapping(value, cfg.topic_defaults)
            except Exception as exc:
                raise ConfigError(f"{source}: topic_defaults: {exc}") from None
        elif key == "controller_voters":
            changes[key] = _voters(value, source)
        elif key == "rack":
            if not isinstance(value, str) or not value:
                raise ConfigError(f"{source}: rack must be a non-empty string, got {value!r}")
            changes[key] = value
        elif key == "limits":
            if not isinstance(value, Mapping):
                raise ConfigError(f"{source}: limits must be a mapping")
            try:
                merged = {**dataclasses.asdict(cfg.limits), **dict(value)}
                changes[key] = Limits.from_mapping(merged)
            except ValueError as exc:
                raise ConfigError(f"{source}: {exc}") from None
        else:
            current = getattr(cfg, key)
            expected = type(current) if current is not None else str
            if expected is bool and not isinstance(value, bool):
                raise ConfigError(f"{source}: {key} must be true or false, got {value!r}")
            if expected is int and (isinstance(value, bool) or not isinstance(value, int)):
                raise ConfigError(f"{source}: {key} must be an integer, got {value!r}")
            if expected is str and not isinstance(value, str):
                raise ConfigError(f"{source}: {key} must be a string, got {value!r}")
            changes[key] = value
    out = dataclasses.replace(cfg, **changes)
    if not 0 < out.port < 65536:
        raise ConfigError(f"{source}: port {out.port} out of range")
    if not 0 <= out.metrics_port < 65536:
        raise ConfigError(f"{source}: metrics_port {out.metrics_port} out of range (0 turns it off)")
    if not 1 <= out.default_partitions <= out.limits.partitions_per_topic_max:
        raise ConfigError(f"{source}: default_partitions {out.default_partitions} out of range")
    if out.clustered:
        if out.node_id < 1:
            raise ConfigError(f"{source}: a cluster member needs node_id >= 1 (got {out.node_id})")
        if not 0 < out.pub_port < 65536:
            raise ConfigError(f"{source}: a cluster member needs pub_port (1-65535) for replication")
        if not 1 <= out.broker_heartbeat_ms < out.broker_session_timeout_ms:
            raise ConfigError(f"{source}: broker_heartbeat_ms ({out.broker_heartbeat_ms}) must be below "
                              f"broker_session_timeout_ms ({out.broker_session_timeout_ms})")
    for key in ("default_replication_factor", "min_insync_replicas", "replica_lag_ms"):
        if getattr(out, key) < 1:
            raise ConfigError(f"{source}: {key} must be >= 1, not {getattr(out, key)}")
    return out


def _voters(value: Any, source: str) -> dict[int, str]:
    """``controller_voters``: node id -> "host:port" of that voter's controller (1, 3 or 5)."""
    if not isinstance(value, Mapping) or not value:
        raise ConfigError(f"{source}: controller_voters must map node ids to host:port, got {value!r}")
    out: dict[int, str] = {}
    for k, v in value.items():
        try:
            node = int(k)
        except (TypeError, ValueError):
            raise ConfigError(f"{source}: controller_voters: {k!r} is not a node id") from None
        if node < 1 or not isinstance(v, str) or ":" not in v:
            raise ConfigError(f"{source}: controller_voters: {k}: {v!r} must be host:port, node id >= 1")
        port = v.rsplit(":", 1)[1]
        if not port.isdigit() or not 0 < int(port) < 65536:
            raise ConfigError(f"{source}: controller_voters: {k}: port {port!r} out of range")
        out[node] = v
    if len(out) not in (1, 3, 5):
        raise ConfigError(f"{source}: controller_voters: {len(out)} voters; use 1, 3 or 5 (a majority must survive)")
    return out


def load_config(path: str | Path | None = None, overrides: Mapping[str, Any] | None = None) -> BrokerConfig:
    """Embedded defaults, then the YAML file (if any), then flags."""
    cfg = BrokerConfig()
    if path is not None:
        try:
            text = Path(path).read_text()
        except OSError as exc:
            raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
        try:
            data = yaml.safe_load(text) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: invalid YAML: {exc}") from None
        if not isinstance(data, Mapping):
            raise ConfigError(f"{path}: the top level must be a mapping of settings")
        cfg = _apply(cfg, data, str(path))
    if overrides:
        cfg = _apply(cfg, overrides, "command line")
    return cfg
