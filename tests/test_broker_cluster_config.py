"""The cluster keys of the broker config (issue 15): defaults keep the single node, bad values
are refused naming the key."""

import logging

import pytest

from fabric.broker.config import BrokerConfig, ConfigError, load_config

pytestmark = pytest.mark.unit

CLUSTER = {"node_id": 1, "controller_voters": {1: "127.0.0.1:9292", "2": "127.0.0.1:9293", 3: "127.0.0.1:9294"},
           "controller_port": 9292, "pub_port": 9192, "port": 9092, "rack": "r1"}


def test_defaults_leave_the_single_node_unchanged():
    cfg = BrokerConfig()
    assert not cfg.clustered and cfg.controller_voters is None and cfg.pub_port == 0
    assert (cfg.broker_heartbeat_ms, cfg.broker_session_timeout_ms, cfg.min_insync_replicas) == (250, 1500, 1)
    assert cfg.unclean_leader_election is False


def test_a_cluster_config_parses_with_voter_ids_as_ints():
    cfg = BrokerConfig().with_overrides(CLUSTER)
    assert cfg.clustered and cfg.controller_voters == {1: "127.0.0.1:9292", 2: "127.0.0.1:9293", 3: "127.0.0.1:9294"}
    assert cfg.rack == "r1"


@pytest.mark.parametrize("change, words", [
    ({"controller_voters": {"x": "127.0.0.1:1"}}, "controller_voters: 'x' is not a node id"),
    ({"controller_voters": {1: "127.0.0.1"}}, "controller_voters[1]: expected"),
    ({"controller_voters": []}, "controller_voters must be a non-empty mapping"),
    ({"pub_port": 0}, "needs pub_port"),
    ({"controller_port": 0}, "needs controller_port"),
    ({"pub_port": 9092}, "must differ"),
    ({"broker_heartbeat_ms": 5}, "broker_heartbeat_ms 5 out of range"),
    ({"broker_session_timeout_ms": 300}, "broker_session_timeout_ms 300 must be at least twice"),
    ({"min_insync_replicas": 0}, "min_insync_replicas 0 out of range"),
    ({"unclean_leader_election": "yes"}, "unclean_leader_election must be true or false"),
    ({"rack": ""}, "rack must be a non-empty string"),
    ({"replica_lag_ms": 1}, "replica_lag_ms 1 out of range"),
])
def test_bad_cluster_values_are_refused_naming_the_key(change, words):
    with pytest.raises(ConfigError, match=words.replace("[", r"\[").replace("]", r"\]")):
        BrokerConfig().with_overrides({**CLUSTER, **change})


def test_yaml_file_with_cluster_keys(tmp_path):
    path = tmp_path / "b.yaml"
    path.write_text("node_id: 2\nport: 9093\npub_port: 9193\ncontroller_port: 9293\n"
                    "controller_voters: {1: '127.0.0.1:9292', 2: '127.0.0.1:9293'}\n")
    cfg = load_config(path)
    assert cfg.controller_voters == {1: "127.0.0.1:9292", 2: "127.0.0.1:9293"} and cfg.node_id == 2


def test_a_clustered_broker_keeps_leader_epochs_with_its_logs(tmp_path):
    """A cluster member's partitions carry the leader-epoch table replication truncates by."""
    from fabric.broker.core import BrokerCore
    from fabric.log.epoch_log import EpochLog
    cfg = BrokerConfig(data_dir=str(tmp_path)).with_overrides(CLUSTER)
    core = BrokerCore(cfg, 1000)
    try:
        assert core.clustered and core.topics.open_log == EpochLog.open
    finally:
        core.close()

def test_shipped_cluster_configs_load_and_agree():
    from pathlib import Path
    root = Path(__file__).resolve().parents[1] / "configs"
    cfgs = [load_config(root / "cluster" / f"broker-{n}.yaml") for n in (1, 2, 3)]
    assert [c.node_id for c in cfgs] == [1, 2, 3] and [c.port for c in cfgs] == [9092, 9093, 9094]
    assert all(c.controller_voters == cfgs[0].controller_voters for c in cfgs)
    for c in cfgs:  # each voter's own controller port is the one the others dial
        assert c.controller_voters[c.node_id] == f"127.0.0.1:{c.controller_port}"
    assert len({c.data_dir for c in cfgs}) == 3
    assert not load_config(root / "broker.yaml").clustered  # the single-node file stays single-node
