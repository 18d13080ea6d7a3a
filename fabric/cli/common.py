"""Helpers shared by the CLI commands: bootstrap/timeout options, parsing of user values, and
turning library errors into one clear line (no tracebacks for user mistakes)."""

from __future__ import annotations

import argparse
import datetime as dt
import os
import re
import sys
from typing import Any, NoReturn

from rich.console import Console

DEFAULT_BOOTSTRAP = os.environ.get("FABRIC_BOOTSTRAP", "127.0.0.1:7171")

out = Console(highlight=False, soft_wrap=True)
err_console = Console(stderr=True, highlight=False, soft_wrap=True)


class UserError(Exception):
    """A mistake the user can fix; printed as one line, exit status 1."""


def fail(message: str) -> NoReturn:
    raise UserError(message)


def add_client_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--bootstrap", "-b", default=DEFAULT_BOOTSTRAP, metavar="HOST:PORT",
                   help=f"broker address (default {DEFAULT_BOOTSTRAP}; env FABRIC_BOOTSTRAP)")
    p.add_argument("--timeout-ms", type=int, default=10_000, metavar="MS",
                   help="give up on a broker request after this long (default 10000)")


def parse_config_pairs(pairs: list[str] | None) -> dict[str, Any]:
    """``["retention_ms=3600000", "cleanup_policy=compact"]`` -> typed values (ints, bools, text)."""
    out_map: dict[str, Any] = {}
    for pair in pairs or []:
        if "=" not in pair:
            fail(f"config {pair!r} must look like key=value")
        key, value = pair.split("=", 1)
        key = key.strip().replace(".", "_")
        v: Any = value.strip()
        if re.fullmatch(r"-?\d+", v):
            v = int(v)
        elif v.lower() in ("true", "false"):
            v = v.lower() == "true"
        out_map[key] = v
    return out_map


_REL = re.compile(r"^-(\d+)(ms|s|m|h|d)$")
_UNIT_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}


def parse_time_ms(text: str) -> int:
    """Milliseconds since the epoch, an ISO 8601 date-time (local time unless it has an offset),
    or a relative time such as ``-15m``, ``-2h``, ``-1d``."""
    text = text.strip()
    if re.fullmatch(r"\d+", text):
        return int(text)
    m = _REL.match(text)
    if m:
        return int(dt.datetime.now().timestamp() * 1000) - int(m.group(1)) * _UNIT_MS[m.group(2)]
    try:
        when = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        fail(f"cannot read time {text!r}: use epoch milliseconds, ISO 8601 (2026-11-25T10:00:00) or -15m/-2h/-1d")
    return int(when.timestamp() * 1000)


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


def die(message: str, code: int = 1) -> NoReturn:
    err_console.print(f"[bold red]error:[/] {message}", markup=True)
    sys.exit(code)
