"""Helpers shared by the CLI commands: bootstrap/timeout options, parsing of user values, the
exit-status rule, the first contact with a broker, and turning library errors into one clear
line (no tracebacks for user mistakes).

Exit status, the same for every command (also in ``fabric --help`` and the README):

* 0: done;
* 1: the command ran and failed: the broker is unreachable or refused the request, an unknown
  topic or group, a file that cannot be read;
* 2: a usage error: the command line itself is wrong (unknown option, missing or malformed
  value, options that do not go together), found before anything is sent to a broker;
* 130: interrupted (Ctrl-C) in the middle of its work.  (``fabric consume`` runs until it is
  stopped: SIGTERM or Ctrl-C is its normal end, so it commits, leaves its group and exits 0.)

Why 2 and not 1 for usage: it is what argparse, POSIX utilities and Kafka's tools return, so a
script can tell "fix your command" from "try again later".
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import re
import socket
import sys
import time
from typing import Any, NoReturn

from rich.console import Console
from rich.text import Text

from .output import out  # noqa: F401  (re-exported: the commands' stdout console)

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130

EXIT_STATUS_HELP = """exit status: 0 done; 1 the command failed (broker unreachable or refused, unknown topic or
group, ...); 2 usage error (bad option or value, nothing was sent); 130 interrupted (Ctrl-C); `consume` stopped by Ctrl-C or SIGTERM commits, leaves and exits 0."""

DEFAULT_BOOTSTRAP = os.environ.get("FABRIC_BOOTSTRAP", "127.0.0.1:7171")
# The first contact with a broker is a plain TCP connect this long at most (or --timeout-ms if
# shorter): an address nobody listens on fails in this time, not after a request's full timeout.
FIRST_CONTACT_TIMEOUT_S = 2.0

err_console = Console(stderr=True, highlight=False, soft_wrap=True)


class UserError(Exception):
    """A failure the user can act on; printed as one line, exit status 1."""

    exit_status = EXIT_FAILURE


class UsageError(UserError):
    """The command line is wrong (found before contacting a broker): exit status 2."""

    exit_status = EXIT_USAGE


def fail(message: str) -> NoReturn:
    raise UserError(message)


def usage_error(message: str) -> NoReturn:
    raise UsageError(message)


# ----------------------------------------------------------------------------- addresses
def parse_address(item: str) -> tuple[str, int]:
    """``HOST:PORT`` (or ``tcp://HOST:PORT``, ``[::1]:PORT``) -> (host, port), or ValueError with
    a sentence saying what is wrong."""
    text = item.strip()
    if text.startswith("tcp://"):
        text = text[len("tcp://"):]
    elif "://" in text:
        raise ValueError(f"{item!r}: only tcp:// addresses are supported")
    host, sep, port_text = text.rpartition(":")
    if not sep or not host:
        raise ValueError(f"{item!r} is not HOST:PORT (like 127.0.0.1:7171)")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not re.fullmatch(r"\d{1,5}", port_text) or not 1 <= int(port_text) <= 65535:
        raise ValueError(f"{item!r}: port must be a number from 1 to 65535")
    return host, int(port_text)


def bootstrap_arg(text: str) -> str:
    """argparse ``type`` of --bootstrap: every comma-separated address checked at once."""
    items = [i for i in text.split(",") if i.strip()]
    if not items:
        raise argparse.ArgumentTypeError("no broker address given (HOST:PORT)")
    for item in items:
        try:
            parse_address(item)
        except ValueError as exc:
            source = " (from FABRIC_BOOTSTRAP)" if text == os.environ.get("FABRIC_BOOTSTRAP") else ""
            raise argparse.ArgumentTypeError(f"{exc}{source}") from None
    return text


def port_arg(text: str) -> int:
    if not re.fullmatch(r"\d{1,5}", text.strip()) or not 1 <= int(text) <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number (1 to 65535)")
    return int(text)


def check_reachable(bootstrap: str, timeout_s: float = FIRST_CONTACT_TIMEOUT_S) -> None:
    """Fail fast when no broker listens: a TCP connect to each bootstrap address in turn, at most
    ``timeout_s`` each, before the first ZeroMQ request.  ZeroMQ itself would retry a refused
    connection silently until the request timed out (10 s by default), which tells a user
    nothing for 10 s.  One address that accepts is enough; the client then does the rest with
    its normal timeouts."""
    problems = []
    for item in bootstrap.split(","):
        if not item.strip():
            continue
        host, port = parse_address(item)
        started = time.monotonic()
        try:
            with socket.create_connection((host, port), timeout=timeout_s):
                return
        except socket.gaierror as exc:
            why = f"unknown host: {exc.strerror}"
        except socket.timeout:
            why = f"no answer within {time.monotonic() - started:.1f} s"
        except OSError as exc:
            why = (exc.strerror or str(exc)).lower()
        problems.append(f"{host}:{port} ({why})")
    fail(f"cannot reach broker at {', '.join(problems)}: is the broker running? (`fabric broker` starts one; "
         f"--bootstrap or FABRIC_BOOTSTRAP say where it is)")


def add_client_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--bootstrap", "-b", default=DEFAULT_BOOTSTRAP, type=bootstrap_arg, metavar="HOST:PORT",
                   help=f"broker address (default {DEFAULT_BOOTSTRAP}; env FABRIC_BOOTSTRAP)")
    p.add_argument("--timeout-ms", type=positive_int, default=10_000, metavar="MS",
                   help="give up on a broker request after this long (default 10000)")


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be greater than 0")
    return value


def add_output_option(p: argparse.ArgumentParser, table_name: str = "table") -> None:
    """``--output table|json`` (``-o``), and the older ``--json`` as an alias of ``--output json``.
    JSON is one document on stdout with the same field names whatever the terminal."""
    p.add_argument("--output", "-o", choices=[table_name, "json"], default=table_name,
                   help=f"{table_name} (default: for people) or json (for scripts: every field, in full)")
    p.add_argument("--json", dest="output", action="store_const", const="json",
                   help="same as --output json")


# ----------------------------------------------------------------------------- values
def parse_config_pairs(pairs: list[str] | None) -> dict[str, Any]:
    """``["retention_ms=3600000", "cleanup_policy=compact"]`` -> typed values (ints, bools, text)."""
    out_map: dict[str, Any] = {}
    for pair in pairs or []:
        if "=" not in pair:
            usage_error(f"config {pair!r} must look like key=value")
        key, value = pair.split("=", 1)
        key = key.strip().replace(".", "_")
        v: Any = value.strip()
        if re.fullmatch(r"-?\d+", v):
            v = int(v)
        elif v.lower() in ("true", "false"):
            v = v.lower() == "true"
        out_map[key] = v
    return out_map


RELATIVE_TIME = re.compile(r"^-(\d+)(ms|s|m|h|d)$")
_UNIT_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}
TIME_HELP = "epoch ms, ISO 8601, or -15m/-2h/-1d"


def parse_time_ms(text: str) -> int:
    """Milliseconds since the epoch, an ISO 8601 date-time (local time unless it has an offset),
    or a relative time such as ``-15m``, ``-2h``, ``-1d``."""
    text = text.strip()
    if re.fullmatch(r"\d+", text):
        return int(text)
    m = RELATIVE_TIME.match(text)
    if m:
        return int(dt.datetime.now().timestamp() * 1000) - int(m.group(1)) * _UNIT_MS[m.group(2)]
    try:
        when = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        usage_error(f"cannot read time {text!r}: use epoch milliseconds, ISO 8601 (2026-11-25T10:00:00) "
                    "or -15m/-2h/-1d")
    return int(when.timestamp() * 1000)


def time_arg(text: str) -> str:
    """argparse ``type`` of a time option: checked at once, converted when used (``parse_time_ms``)
    so that a relative time counts from when the command needs it."""
    try:
        parse_time_ms(text)
    except UsageError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def config_pair_arg(text: str) -> str:
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"config {text!r} must look like key=value")
    return text


def header_arg(text: str) -> str:
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"header {text!r} must look like NAME=VALUE")
    return text


def format_ms(ms: int) -> str:
    if ms < 0:
        return "-"
    return dt.datetime.fromtimestamp(ms / 1000).isoformat(sep=" ", timespec="milliseconds")


def human_bytes(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return str(n)


def die(message: str, code: int = EXIT_FAILURE) -> NoReturn:
    err_console.print(Text.assemble(("error:", "bold red"), " ", message))
    sys.exit(code)
