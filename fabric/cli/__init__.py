"""The ``fabric`` command.  Thin: it validates input, calls the client library, renders with rich.

Each command group lives in its own module and registers its sub-parsers here.
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Sequence

from .. import __version__
from ..client.connection import ClientError, RequestTimeoutError
from ..protocol.errors import FabricError
from . import (broker_cmd, cluster_cmd, connect_cmd, dashboard_cmd, data_cmd, group_cmd, log_cmd, perf_cmd,
               reassign_cmd, topic_cmd)
from .common import (EXIT_INTERRUPTED, EXIT_OK, EXIT_STATUS_HELP, FIRST_CONTACT_TIMEOUT_S, UserError,
                     check_reachable, die)
from .parsing import FabricArgumentParser

EPILOG = """examples:
  fabric broker                                   start a single-node broker (data in ./fabric-data)
  fabric topic create orders --partitions 3       create a topic
  printf 'k1:hello\\nk2:world\\n' | fabric produce orders --key-separator :
  fabric consume orders --from-beginning --max 2  read them back
  fabric offsets orders                           earliest/latest offsets per partition
  fabric consume orders --group billing           share the partitions with group "billing"
  fabric group describe billing                   members, committed offsets and lag
  fabric topic list --output json                 any command that prints data: --output table|json
  fabric dashboard                                live view: throughput, lag, health
  fabric cluster up                               a local 3-broker replicated cluster
  fabric reassign --generate --topics orders --brokers 2,3,4   propose moving partitions

Every client command takes --bootstrap HOST:PORT (default 127.0.0.1:7171, env FABRIC_BOOTSTRAP).

""" + EXIT_STATUS_HELP

MODULES = [broker_cmd, cluster_cmd, reassign_cmd, topic_cmd, data_cmd, group_cmd, perf_cmd, dashboard_cmd, log_cmd,
           connect_cmd]


def build_parser() -> argparse.ArgumentParser:
    parser = FabricArgumentParser(prog="fabric", description="Fabric: a durable, partitioned event log over ZeroMQ.",
                                  epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"fabric {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log client activity to stderr")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for module in MODULES:
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.verbose:
        logging.basicConfig(level=logging.DEBUG, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        if hasattr(args, "validate"):  # option combinations argparse cannot check: usage errors, exit 2
            args.validate(args)
        if getattr(args, "bootstrap", None) and not getattr(args, "waits_for_broker", False):
            # every client command fails fast if nobody listens (the dashboard waits instead)
            check_reachable(args.bootstrap, min(FIRST_CONTACT_TIMEOUT_S, args.timeout_ms / 1000))
        return int(args.func(args) or EXIT_OK)
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # `fabric consume ... | head`
        return EXIT_OK
    except UserError as exc:
        die(str(exc), exc.exit_status)
    except RequestTimeoutError as exc:
        die(f"{exc}")
    except FabricError as exc:
        die(f"{exc.name}: {exc.message}")
    except ClientError as exc:
        die(str(exc))
    except ValueError as exc:
        die(str(exc))
    return EXIT_OK


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
