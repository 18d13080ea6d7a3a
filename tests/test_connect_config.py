"""Connect YAML validation: every bad config gives its precise, path-named message."""

from __future__ import annotations

import pathlib

import pytest

from connectors.config import ConfigError, load_file, load_text, parse
from connectors.plugins import BUILTIN, PluginError, load_connector_class

CONFIGS = pathlib.Path(__file__).parent.parent / "configs" / "connect"

FILE_SRC = {"name": "a", "class": "file-source", "config": {"file": "x.txt", "topic": "t"}}
SQL_SRC = {"name": "b", "class": "sqlite-source", "config": {"database": "x.db", "tables": ["t"],
                                                            "mode": "incrementing", "incrementing_column": "id"}}


def errors_of(doc: dict) -> list[str]:
    with pytest.raises(ConfigError) as e:
        parse(doc)
    return [f"{p}: {r}" for p, r in e.value.errors]


def with_conn(**changes) -> dict:
    c = {**FILE_SRC, **changes}
    return {"connectors": [c]}


def test_valid_file_gets_defaults():
    cfg = parse({"connectors": [FILE_SRC]})
    c = cfg.connectors[0]
    assert (cfg.bootstrap, cfg.rest_port, cfg.offsets_topic) == ("127.0.0.1:7171", 8083, "connect-offsets")
    assert (c.tasks_max, c.key_converter, c.value_converter, c.errors.tolerance) == (1, "string", "json", "none")
    assert c.config == {"file": "x.txt", "topic": "t", "batch_size": 10_000, "poll_interval_ms": 100}
    assert c.restart.max_tries == 10 and not c.is_sink


def test_required_connector_config_key_names_its_path():
    bad = {**SQL_SRC, "config": {k: v for k, v in SQL_SRC["config"].items() if k != "tables"}}
    assert errors_of({"connectors": [FILE_SRC, bad]}) == ["connectors[1].config.tables: required (or query)"]


def test_unknown_transform_did_you_mean():
    doc = with_conn(transforms=[{"type": "insert_field", "field": "f", "value": 1},
                                {"type": "exclude", "fields": ["x"]},
                                {"type": "maskk", "fields": ["x"]}])
    assert errors_of(doc) == ["connectors[0].transforms[2].type: unknown transform 'maskk' (did you mean 'mask'?)"]


def test_every_error_at_once():
    doc = {"worker": {"bootstrap": 7, "rest_prot": 1},
           "connectors": [{"name": "a", "class": "file-sourse", "tasks_max": 0, "value_converter": "jsn"},
                          {"class": "file-source", "config": {"topic": "t", "fil": "x"}}]}
    assert errors_of(doc) == [
        "worker.bootstrap: must be a string, not an integer",
        "worker.rest_prot: unknown key (did you mean 'rest_port'?)",
        "connectors[0].class: unknown connector class 'file-sourse' (did you mean 'file-source'?)",
        "connectors[0].tasks_max: must be an integer >= 1, not 0",
        "connectors[0].value_converter: unknown converter 'jsn' (did you mean 'json'?); one of json, string, bytes, cbor",
        "connectors[1].name: required",
        "connectors[1].config.fil: unknown key (did you mean 'file'?)",
        "connectors[1].config.file: required",
    ]


@pytest.mark.parametrize("doc, expected", [
    ({}, "connectors: required: a non-empty list of connectors"),
    ({"connectors": [FILE_SRC], "workers": {}}, "workers: unknown key (did you mean 'worker'?)"),
    (with_conn(name="bad name!"), "connectors[0].name: must be 1-100 characters of A-Z a-z 0-9 . _ -"),
    ({"connectors": [FILE_SRC, FILE_SRC]}, "connectors[1].name: duplicate name 'a' (also connectors[0])"),
    (with_conn(clas="x"), "connectors[0].clas: unknown key (did you mean 'class'?)"),
    (with_conn(topics=["x"]), "connectors[0].topics: only sinks read topics (a source names its topic in config)"),
    ({"connectors": [{"name": "s", "class": "file-sink", "config": {"file": "o"}}]},
     "connectors[0].topics: required for a sink (or topics_regex)"),
    ({"connectors": [{"name": "s", "class": "file-sink", "topics_regex": "(", "config": {"file": "o"}}]},
     "connectors[0].topics_regex: invalid regular expression: missing ), unterminated subpattern at position 0"),
    (with_conn(errors={"tolerance": "some"}), "connectors[0].errors.tolerance: must be one of none, all, not 'some'"),
    (with_conn(errors={"dead_letter_topic": "dlq"}),
     "connectors[0].errors.dead_letter_topic: needs tolerance: all (with none the task stops at the first bad record)"),
    (with_conn(restart={"max_tries": -1}), "connectors[0].restart.max_tries: must be at least 0, not -1"),
    (with_conn(config={"file": "x", "topic": "t", "poll_interval_ms": "fast"}),
     "connectors[0].config.poll_interval_ms: must be an integer, not a string"),
    (with_conn(transforms={"type": "mask"}), "connectors[0].transforms: must be a list, not a mapping"),
    (with_conn(transforms=[{"fields": ["a"]}]),
     "connectors[0].transforms[0].type: required: one of insert_field, rename, include, exclude, mask, filter, "
     "value_to_key, extract_field, add_header, route_regex, route_timestamp"),
    (with_conn(transforms=[{"type": "mask"}]), "connectors[0].transforms[0].fields: required"),
    (with_conn(transforms=[{"type": "mask", "fields": ["a"], "feilds": 1}]),
     "connectors[0].transforms[0].feilds: unknown key (did you mean 'fields'?)"),
    (with_conn(transforms=[{"type": "filter"}]),
     "connectors[0].transforms[0].predicate: required: filter drops the records its predicate selects"),
    (with_conn(transforms=[{"type": "filter", "predicate": {"type": "topic_match", "pattern": "x"}}]),
     "connectors[0].transforms[0].predicate.type: unknown predicate 'topic_match' (did you mean 'topic_matches'?); "
     "one of topic_matches, has_header, is_tombstone, field_equals, field_matches"),
    (with_conn(transforms=[{"type": "filter", "predicate": {"type": "topic_matches", "pattern": "["}}]),
     "connectors[0].transforms[0].predicate.pattern: invalid regular expression: unterminated character set at "
     "position 0"),
    (with_conn(transforms=[{"type": "insert_field", "field": "f"}]),
     "connectors[0].transforms[0]: insert_field needs exactly one of value or from"),
    (with_conn(transforms=[{"type": "insert_field", "field": "f", "from": "topik"}]),
     "connectors[0].transforms[0].from: must be one of topic, timestamp, partition, offset, not 'topik' "
     "(did you mean 'topic'?)"),
    (with_conn(transforms=[{"type": "mask", "fields": ["a"], "negate": "yes"}]),
     "connectors[0].transforms[0].negate: must be true or false, not a string"),
    ({"connectors": [{**SQL_SRC, "config": {**SQL_SRC["config"], "mode": "incrementing",
                                            "incrementing_column": None}}]},
     "connectors[0].config.incrementing_column: required for mode incrementing"),
])
def test_bad_config_message(doc, expected):
    assert errors_of(doc) == [expected]


def test_yaml_syntax_error_names_line():
    with pytest.raises(ConfigError) as e:
        load_text("connectors:\n  - name: [a\n")
    assert e.value.errors[0][0].startswith("line ")
    assert "not valid YAML" in e.value.errors[0][1]


def test_unreadable_file(tmp_path):
    with pytest.raises(ConfigError) as e:
        load_file(tmp_path / "missing.yaml")
    assert e.value.errors == [(str(tmp_path / "missing.yaml"), "cannot read: No such file or directory")]


def test_shipped_examples_are_valid():
    files = sorted(CONFIGS.glob("*.yaml"))
    assert len(files) >= 4
    for f in files:
        cfg = load_file(f)
        assert cfg.connectors, f


def test_every_builtin_loads():
    for name in BUILTIN:
        assert load_connector_class(name).task_class is not None


def test_module_class_path_and_bad_plugin():
    assert load_connector_class("connectors.builtin.file:FileSinkConnector").__name__ == "FileSinkConnector"
    with pytest.raises(PluginError, match="is not a Connector subclass"):
        load_connector_class("connectors.config:ConfigError")


def test_entry_point_plugin_is_found(tmp_path, monkeypatch):
    """A distribution that declares the ``fabric.connectors`` entry point is usable by name."""
    site = tmp_path / "site"
    (site / "myplug").mkdir(parents=True)
    (site / "myplug" / "__init__.py").write_text(
        "from connectors.builtin.file import FileSinkConnector\nclass Plug(FileSinkConnector):\n    pass\n")
    dist = site / "myplug-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: myplug\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[fabric.connectors]\nmy-sink = myplug:Plug\n")
    monkeypatch.syspath_prepend(str(site))
    cfg = parse({"connectors": [{"name": "p", "class": "my-sink", "topics": ["t"], "config": {"file": "o"}}]})
    assert cfg.connectors[0].connector_class.__name__ == "Plug" and cfg.connectors[0].is_sink
