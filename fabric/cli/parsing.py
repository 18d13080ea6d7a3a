"""The ``fabric`` command line parser: argparse with two changes a new user runs into.

1. Values that start with ``-``.  The README's ``--from-time -10m`` looks to argparse like an
   unknown option (it only takes ``-10`` for a value, as a negative number), so the parse
   fails.  Before parsing, each parser joins an option that takes a value with a following
   token that starts with ``-`` and a digit (``-10m``, ``-1d``, ``-100``) into one token
   ``--from-time=-10m``, which argparse reads as the value.  No option of ours starts with a
   digit, so nothing else changes meaning.  ``--`` ends this, as it ends options.
2. Usage errors are one line on stderr and exit status 2 (see ``common``'s exit-status rule),
   with a pointer to the command's ``--help``, instead of the usage block; stray arguments are
   reported by the command they follow, not by ``fabric``.
"""

from __future__ import annotations

import argparse
import re
import sys
from typing import Any, NoReturn, Sequence

from rich.text import Text

from .common import EXIT_USAGE, err_console

_NEGATIVE_VALUE = re.compile(r"^-\d")


def join_negative_values(args: Sequence[str], takes_value: set[str]) -> list[str]:
    """``["--from-time", "-10m"]`` -> ``["--from-time=-10m"]`` for options in ``takes_value``."""
    joined: list[str] = []
    i = 0
    while i < len(args):
        token = args[i]
        if token == "--":
            joined.extend(args[i:])
            break
        if token in takes_value and i + 1 < len(args) and _NEGATIVE_VALUE.match(args[i + 1]):
            joined.append(f"{token}={args[i + 1]}" if token.startswith("--") else token + args[i + 1])
            i += 2
            continue
        joined.append(token)
        i += 1
    return joined


class FabricArgumentParser(argparse.ArgumentParser):
    """argparse, with negative-looking values accepted and one-line usage errors.  Sub-parsers
    made by ``add_subparsers`` are of this class too (argparse uses the parent's class)."""

    def _value_options(self) -> set[str]:
        return {opt for action in self._actions if action.option_strings and action.nargs != 0
                for opt in action.option_strings}

    def parse_known_args(self, args: Sequence[str] | None = None,
                         namespace: argparse.Namespace | None = None) -> Any:
        args = sys.argv[1:] if args is None else list(args)
        parsed, extras = super().parse_known_args(join_negative_values(args, self._value_options()), namespace)
        if extras and not any(isinstance(a, argparse._SubParsersAction) for a in self._actions):
            # A command reports its own stray arguments, so that the error names it (argparse
            # would pass them up to `fabric`, whose --help does not list them).
            self.error(f"unrecognized arguments: {' '.join(extras)}")
        return parsed, extras

    def error(self, message: str) -> NoReturn:
        err_console.print(Text.assemble(("error:", "bold red"), f" {self.prog}: {message} "
                                        f"(`{self.prog} --help` lists the options)"))
        sys.exit(EXIT_USAGE)
