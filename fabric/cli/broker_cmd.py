"""``fabric broker``: run a broker in the foreground until SIGTERM/Ctrl-C."""

from __future__ import annotations

import argparse
import logging
from typing import Any

from ..broker.config import ConfigError, load_config
from .common import fail, port_arg

EPILOG = """examples:
  fabric broker                                   embedded default: 127.0.0.1:7171, data in ./fabric-data
  fabric broker --port 7200 --data-dir /var/lib/fabric
  fabric broker --config configs/broker.yaml      settings from a file (flags still win)
  fabric broker --flush-every-batch               fsync before every acknowledgement
  fabric broker --metrics-port 9464               Prometheus metrics on http://127.0.0.1:9464/metrics"""


def register(sub: Any) -> None:
    p = sub.add_parser("broker", help="run a broker", epilog=EPILOG,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", "-c", metavar="FILE", help="YAML settings file (see configs/broker.yaml)")
    p.add_argument("--data-dir", metavar="DIR", help="where partitions are stored (default ./fabric-data)")
    p.add_argument("--host", help="address to listen on (default 127.0.0.1; 0.0.0.0 for all)")
    p.add_argument("--port", type=port_arg, help="TCP port, 1 to 65535 (default 7171)")
    p.add_argument("--advertised-host", help="host name clients should use to reach this broker")
    p.add_argument("--node-id", type=int)
    p.add_argument("--partitions", dest="default_partitions", type=int, metavar="N",
                   help="partitions of auto-created topics (default 1)")
    p.add_argument("--no-auto-create", dest="auto_create_topics", action="store_const", const=False,
                   help="reject produce/metadata for unknown topics instead of creating them")
    p.add_argument("--flush-every-batch", action="store_true",
                   help="fsync each batch before acknowledging it (safest, slower)")
    p.add_argument("--flush-interval-ms", type=int, metavar="MS",
                   help="fsync at most this long after a write (default 1000)")
    p.add_argument("--group-initial-rebalance-delay-ms", type=int, metavar="MS",
                   help="an empty group's first rebalance waits this long for more members (default 3000)")
    p.add_argument("--metrics-port", type=int, metavar="PORT",
                   help="serve Prometheus metrics on http://HOST:PORT/metrics (default: off)")
    p.add_argument("--log-level", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..broker.server import BrokerServer

    overrides: dict[str, Any] = {k: getattr(args, k) for k in
                                 ("data_dir", "host", "port", "advertised_host", "node_id", "default_partitions",
                                  "auto_create_topics", "group_initial_rebalance_delay_ms", "log_level",
                                  "metrics_port")}
    topic_defaults: dict[str, Any] = {}
    if args.flush_every_batch:
        topic_defaults["flush_every_batch"] = True
    if args.flush_interval_ms is not None:
        topic_defaults["flush_interval_ms"] = args.flush_interval_ms
    if topic_defaults:
        overrides["topic_defaults"] = topic_defaults
    try:
        config = load_config(args.config, overrides)
    except ConfigError as exc:
        fail(str(exc))
    logging.basicConfig(level=getattr(logging, config.log_level), stream=None,
                        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s")
    try:
        server = BrokerServer(config)
    except OSError as exc:
        fail(f"cannot start the broker: {exc}")
    except Exception as exc:
        if type(exc).__name__ == "ZMQError":
            fail(f"cannot listen on {config.endpoint}: {exc}")
        raise
    server.install_signal_handlers()
    server.serve_forever()
    return 0
