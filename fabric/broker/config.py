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
    # An idempotent producer silent this long on a partition is forgotten there (Kafka's
    # producer.id.expiration.ms); its next batch then needs a new producer id (SPEC 14).
    producer_id_expiration_ms: int = 86_400_000
    log_level: str = "INFO"
    # Prometheus text format on http://host:metrics_port/metrics; 0 = off (the default).
    metrics_port: int = 0
    topic_defaults: LogConfig = field(default_factory=LogConfig)
    limits: Limits = field(default_factory=Limits)
    # ---- cluster (issue 15; SPEC.md section 13).  With ``controller_voters`` unset the broker is
    # the single node of today and every key below is ignored.
    controller_voters: dict[int, str] | None = None  # voter node id -> "host:port" of its controller port
    controller_port: int = 0  # this node's controller ROUTER (required when node_id is a voter)
    pub_port: int = 0  # this node's replication PUB socket (required when clustered)
    rack: str | None = None  # placement spreads a partition's replicas over racks
    broker_heartbeat_ms: int = 250  # how often a broker heartbeats the active controller
    broker_session_timeout_ms: int = 1500  # a broker silent this long is fenced
    replica_lag_ms: int = 10_000  # a follower not caught up for this long leaves the ISR
    min_insync_replicas: int = 1  # default for topics: acks=all needs this many in the ISR
    unclean_leader_election: bool = False  # default for topics: elect an out-of-sync replica (loses data)
    replication_throttle_bytes: int = 0  # bytes/s a replica joining by reassignment copies (0: unlimited)
    leader_imbalance_check_ms: int = 10_000  # automatic preferred-leader election every this often (0: off)

    @property
    def clustered(self) -> bool:
        """Whether this broker is configured as a member of a replicated cluster."""
        return self.controller_voters is not None

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
            if not isinstance(value, str) or not value or len(value) > 64:
                raise ConfigError(f"{source}: rack must be a non-empty string of at most 64 characters, got {value!r}")
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
    _check_cluster(out, source)
    return out


def _voters(value: Any, source: str) -> dict[int, str]:
    """``controller_voters``: a mapping node id -> "host:port" (YAML may give the ids as text)."""
    if not isinstance(value, Mapping) or not value:
        raise ConfigError(f"{source}: controller_voters must be a non-empty mapping node id -> \"host:port\"")
    out: dict[int, str] = {}
    for k, v in value.items():
        try:
            node = int(k) if not isinstance(k, bool) else -1
        except (TypeError, ValueError):
            node = -1
        if node < 0 or node > 2**31 - 1:
            raise ConfigError(f"{source}: controller_voters: {k!r} is not a node id (an integer 0..2147483647)")
        host, sep, port = str(v).rpartition(":") if isinstance(v, str) else ("", "", "")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ConfigError(f"{source}: controller_voters[{node}]: expected \"host:port\", got {v!r}")
        out[node] = v
    if len(out) > 9:
        raise ConfigError(f"{source}: controller_voters: {len(out)} voters; at most 9 (use 3 or 5)")
    return out


def _check_cluster(cfg: BrokerConfig, source: str) -> None:
    """The cluster keys' ranges and how they fit together (only enforced when clustered)."""
    for key in ("controller_port", "pub_port"):
        if not 0 <= getattr(cfg, key) < 65536:
            raise ConfigError(f"{source}: {key} {getattr(cfg, key)} out of range (0..65535)")
    if not 10 <= cfg.broker_heartbeat_ms <= 60_000:
        raise ConfigError(f"{source}: broker_heartbeat_ms {cfg.broker_heartbeat_ms} out of range (10..60000)")
    if not 2 * cfg.broker_heartbeat_ms <= cfg.broker_session_timeout_ms <= 600_000:
        raise ConfigError(f"{source}: broker_session_timeout_ms {cfg.broker_session_timeout_ms} must be at least "
                          f"twice broker_heartbeat_ms ({cfg.broker_heartbeat_ms}) and at most 600000")
    if not 0 <= cfg.replication_throttle_bytes <= 2**40:
        raise ConfigError(f"{source}: replication_throttle_bytes {cfg.replication_throttle_bytes} out of range "
                          "(0..2**40 bytes/s, 0: unlimited)")
    if not 0 <= cfg.leader_imbalance_check_ms <= 86_400_000:
        raise ConfigError(f"{source}: leader_imbalance_check_ms {cfg.leader_imbalance_check_ms} out of range "
                          "(0..86400000, 0: off)")
    if not 100 <= cfg.replica_lag_ms <= 600_000:
        raise ConfigError(f"{source}: replica_lag_ms {cfg.replica_lag_ms} out of range (100..600000)")
    if not 1 <= cfg.default_replication_factor <= 16:
        raise ConfigError(f"{source}: default_replication_factor {cfg.default_replication_factor} out of range (1..16)")
    if not 1 <= cfg.min_insync_replicas <= 16:
        raise ConfigError(f"{source}: min_insync_replicas {cfg.min_insync_replicas} out of range (1..16)")
    if cfg.controller_voters is None:
        return
    if cfg.pub_port == 0:
        raise ConfigError(f"{source}: a clustered broker (controller_voters set) needs pub_port")
    if cfg.node_id in cfg.controller_voters and cfg.controller_port == 0:
        raise ConfigError(f"{source}: node {cfg.node_id} is a controller voter and needs controller_port")
    ports = [p for p in (cfg.port, cfg.pub_port, cfg.controller_port) if p]
    if len(set(ports)) != len(ports):
        raise ConfigError(f"{source}: port, pub_port and controller_port must differ, got {ports}")


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
