"""The ``fabric`` command line without a broker: values that start with ``-``, the exit-status
rule for every command, address checks, ``--format`` templates."""

from __future__ import annotations

import argparse
import json
import time

import pytest

from fabric.cli import build_parser, main
from fabric.cli.common import EXIT_FAILURE, EXIT_USAGE, parse_address, parse_time_ms
from fabric.cli.parsing import join_negative_values
from fabric.cli.record_format import compile_template, renderer
from fabric.records.batch import Record
from fabric.testing import free_port


def leaf_commands(parser: argparse.ArgumentParser | None = None, prefix: tuple[str, ...] = ()) -> dict:
    """Every runnable command (``("topic", "create")``, ...) -> its parser, found by walking the
    sub-parsers: a command added later is covered by the tests below without editing them."""
    parser = parser or build_parser()
    found = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found.update(leaf_commands(sub, prefix + (name,)))
    return found or {prefix: parser}


# The smallest valid invocation of each command that talks to a broker.
CLIENT_COMMANDS = {
    ("cluster", "status"): [],
    ("cluster", "decommission"): ["4"],
    ("cluster", "rebalance-leaders"): [],
    ("reassign",): ["--list"],
    ("topic", "create"): ["orders"],
    ("topic", "list"): [],
    ("topic", "describe"): ["orders"],
    ("topic", "alter"): ["orders", "--set", "retention_ms=1000"],
    ("topic", "delete"): ["orders"],
    ("offsets",): ["orders"],
    ("produce",): ["orders", "--input", "/dev/null"],
    ("consume",): ["orders", "--max", "1"],
    ("group", "list"): [],
    ("group", "describe"): ["billing"],
    ("group", "reset-offsets"): ["billing", "--topic", "orders", "--to-earliest"],
    ("group", "delete"): ["billing"],
    ("perf", "produce"): ["--topic", "perf", "--records", "1"],
    ("perf", "consume"): ["--topic", "perf", "--records", "1"],
    ("perf", "e2e"): ["--topic", "perf", "--seconds", "0.1"],
    ("dashboard",): ["--once"],
}
# Commands that talk to no broker (a Connect worker reads its brokers from its YAML; the control
# commands talk to a worker's REST port)
LOCAL_COMMANDS = {("broker",): [], ("cluster", "up"): [], ("cluster", "down"): [], ("log", "verify"): ["."], ("connect", "run"): ["w.yaml"],
                  ("connect", "validate"): ["w.yaml"], ("connect", "status"): [], ("connect", "pause"): ["c"],
                  ("connect", "resume"): ["c"], ("connect", "restart"): ["c"], ("connect", "plugins"): []}


def run(argv: list[str]) -> int:
    """``fabric ARGV`` in this process: its exit status, whether it returned or exited."""
    try:
        return main(argv)
    except SystemExit as exc:
        return int(exc.code or 0)


def test_relative_times_are_accepted_as_written():
    parser = build_parser()
    for argv, field in ((["consume", "orders", "--from-time", "-10m"], "from_time"),
                        (["consume", "orders", "--from-time=-10m"], "from_time"),
                        (["consume", "orders", "--from-time", "-10m", "--print-key"], "from_time"),
                        (["offsets", "orders", "--time", "-10m"], "time"),
                        (["group", "reset-offsets", "g", "--topic", "t", "--to-datetime", "-10m"], "to_datetime")):
        assert getattr(parser.parse_args(argv), field) == "-10m", argv
    args = parser.parse_args(["group", "reset-offsets", "g", "--topic", "t", "--shift-by", "-100"])
    assert args.shift_by == -100
    now = time.time() * 1000
    assert abs(parse_time_ms("-10m") - (now - 600_000)) < 5_000
    assert abs(parse_time_ms("-500ms") - (now - 500)) < 5_000


def test_join_negative_values_leaves_everything_else_alone():
    opts = {"--from-time", "-k"}
    assert join_negative_values(["--from-time", "-1d", "x"], opts) == ["--from-time=-1d", "x"]
    assert join_negative_values(["-k", "-1"], opts) == ["-k-1"]
    assert join_negative_values(["--print-key", "-1d"], opts) == ["--print-key", "-1d"]  # not a value option
    assert join_negative_values(["--from-time", "--max"], opts) == ["--from-time", "--max"]
    assert join_negative_values(["--", "--from-time", "-1d"], opts) == ["--", "--from-time", "-1d"]


def test_every_command_has_a_smallest_invocation_here():
    commands = set(leaf_commands())
    assert commands - set(LOCAL_COMMANDS) == set(CLIENT_COMMANDS), "add the new command to CLIENT_COMMANDS"


@pytest.mark.parametrize("command", sorted(leaf_commands()), ids=" ".join)
def test_usage_errors_exit_2_in_one_line(command, capsys):
    smallest = CLIENT_COMMANDS.get(command, LOCAL_COMMANDS.get(command, []))
    assert run([*command, *smallest, "--no-such-option"]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and "--no-such-option" in err
    assert f"fabric {' '.join(command)} --help" in err and "usage:" not in err
    if command in CLIENT_COMMANDS:  # a bad address is a usage error, before any contact
        assert run([*command, *CLIENT_COMMANDS[command], "--bootstrap", "127.0.0.1:99999"]) == EXIT_USAGE
        assert "port must be a number from 1 to 65535" in capsys.readouterr().err


@pytest.mark.parametrize("command", sorted(CLIENT_COMMANDS), ids=" ".join)
def test_unreachable_broker_fails_fast_with_exit_1(command, capsys):
    """Nothing listens on the port: exit 1 within about a second, not after the 10 s request timeout."""
    dead = f"127.0.0.1:{free_port()}"
    started = time.monotonic()
    assert run([*command, *CLIENT_COMMANDS[command], "--bootstrap", dead]) == EXIT_FAILURE
    elapsed = time.monotonic() - started
    err = capsys.readouterr().err
    assert f"cannot reach broker at {dead} (connection refused)" in err and "Traceback" not in err
    assert err.count("\n") == 1
    assert elapsed < 3.0, elapsed


@pytest.mark.parametrize("argv, message", [
    (["consume", "t", "--offset", "3"], "--offset needs --partition"),
    (["consume", "t", "--group", "g", "--from-time", "-1h"], "cannot be combined with --from-time"),
    (["consume", "t", "--format", "%p %x"], "unknown field %x"),
    (["consume", "t", "--format", "no fields"], "has no %-field"),
    (["consume", "t", "--from-time", "yesterday"], "cannot read time 'yesterday'"),
    (["topic", "alter", "t"], "nothing to change"),
    (["topic", "create", "t", "--config", "retention_ms"], "must look like key=value"),
    (["produce", "t", "--header", "nameonly"], "must look like NAME=VALUE"),
    (["group", "reset-offsets", "g", "--topic", "t:x", "--to-earliest"], "partitions are numbers"),
    (["topic", "list", "--bootstrap", "localhost"], "is not HOST:PORT"),
    (["topic", "list", "--bootstrap", "127.0.0.1:0"], "port must be a number from 1 to 65535"),
    (["broker", "--port", "99999"], "not a port number"),
    (["reassign", "--topic", "t", "--partition", "0"], "say what to move"),
    (["reassign", "--topic", "t", "--partition", "0", "--replicas", "1,1"], "distinct broker ids"),
    (["reassign", "--generate", "--topics", "t"], "--generate needs --topics and --brokers"),
])
def test_wrong_values_are_usage_errors_even_without_a_broker(argv, message, capsys):
    """Found before any contact: the address below has no broker, yet the status is 2, not 1."""
    dead = ["--bootstrap", f"127.0.0.1:{free_port()}"] if argv[0] != "broker" and "--bootstrap" not in argv else []
    assert run([*argv, *dead]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


@pytest.mark.parametrize("command", sorted(leaf_commands()), ids=" ".join)
def test_every_command_has_help(command, capsys):
    assert run([*command, "--help"]) == 0
    assert "--" in capsys.readouterr().out


def test_help_states_the_exit_status_rule(capsys):
    assert run(["--help"]) == 0
    text = capsys.readouterr().out
    assert "exit status: 0 done; 1 the command failed" in text and "2 usage error" in text


def test_addresses():
    assert parse_address("127.0.0.1:7171") == ("127.0.0.1", 7171)
    assert parse_address("tcp://broker.example:1") == ("broker.example", 1)
    assert parse_address("[::1]:65535") == ("::1", 65535)
    for bad in ("127.0.0.1", "127.0.0.1:65536", ":7171", "host:port", "udp://h:1"):
        with pytest.raises(ValueError):
            parse_address(bad)


REC = Record("orders", 2, 17, 1_700_000_000_000, b"alice", b"book", (("src", b"web"), ("v", b"1")))
NULLS = Record("orders", 0, 0, 5, None, None, ())


def test_format_templates_like_kcat():
    def fmt(template: str, r: Record = REC) -> str:
        return renderer(template)(r)

    assert fmt("%t %p %o %k %s") == "orders 2 17 alice book\n"
    assert fmt("%T\\t%h\\t%K/%S %%\\n") == "1700000000000\tsrc=web,v=1\t5/4 %\n"  # no second newline
    assert fmt("[%k]", NULLS) == "[]\n" and fmt("%K %S", NULLS) == "-1 -1\n"
    assert renderer("plain")(REC) == "book\n"
    assert renderer("plain", print_key=True, key_separator=":")(REC) == "alice:book\n"
    assert json.loads(renderer("json")(REC)) == {"topic": "orders", "partition": 2, "offset": 17,
                                                  "timestamp": 1_700_000_000_000, "key": "alice", "value": "book",
                                                  "headers": {"src": "web", "v": "1"}}
    binary = REC._replace(value=b"\xff\x00")
    assert fmt("%s", binary) == "\\xff\x00\n"
    assert json.loads(renderer("json")(binary))["value_base64"] == "/wA="
    for bad in ("%q", "plain text", "%"):
        with pytest.raises(ValueError):
            compile_template(bad)
