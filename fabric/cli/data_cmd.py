"""``fabric produce`` (lines from stdin or a file) and ``fabric consume`` (to stdout)."""

from __future__ import annotations

import argparse
import json
import os
import queue
import sys
import threading
import time
from typing import Any, BinaryIO

from ..client.admin import Admin
from ..client.connection import RequestTimeoutError
from ..client.consumer import Consumer, CorruptRecordError
from ..client.producer import Producer
from ..client.shutdown import ShutdownSignals
from ..protocol.errors import exception_for
from .common import (TIME_HELP, add_client_options, err_console, fail, header_arg, parse_time_ms, time_arg,
                     usage_error)
from .progress import ProgressBar
from .record_format import FORMAT_HELP, format_arg, renderer

PRODUCE_EPILOG = """examples:
  echo hello | fabric produce greetings
  printf 'user1:login\\nuser2:logout\\n' | fabric produce events --key-separator :
  fabric produce events --input events.txt --header source=import --acks 1
  seq 10000 | fabric produce numbers --print-metadata > acked.jsonl"""

CONSUME_EPILOG = """examples:
  fabric consume events --from-beginning
  fabric consume events --from-beginning --max 100 --format json
  fabric consume events --partition 2 --offset 1500
  fabric consume events --from-time -15m --print-key
  fabric consume events --from-beginning --format '%p %o %k %s'   partition, offset, key, value
  fabric consume events --from-beginning --format '%T\\t%h\\t%s'   timestamp, headers, value
  fabric consume events --from-beginning --idle-timeout-ms 2000   exit once caught up and idle
  fabric consume events --group billing           share partitions with the other "billing" consumers,
                                                  resume from the group's committed offsets
  fabric consume events --group billing --from-beginning --max 1000
                                                  partitions the group never committed start at the beginning

With --group, offsets are committed every few seconds and on exit (also after --max or
--idle-timeout-ms); `fabric group describe GROUP` shows the members and their lag.

SIGTERM or SIGINT (Ctrl-C) stops it cleanly: it commits what it printed, leaves the group at
once and exits with status 0.  A second signal exits immediately.

Damaged records (a broken batch on the broker's disk): every record before them is printed, then
one error line names the topic, partition and offset, and the exit status is 1.  With
--skip-corrupt a warning goes to stderr instead and reading goes on after the damage."""


def register(sub: Any) -> None:
    p = sub.add_parser("produce", help="send lines from stdin (or a file) as records", epilog=PRODUCE_EPILOG,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("topic")
    p.add_argument("--key-separator", "-k", metavar="SEP",
                   help="split each line at the first SEP into key and value (lines without SEP get no key)")
    p.add_argument("--header", "-H", action="append", metavar="NAME=VALUE", type=header_arg,
                   help="header on every record, repeatable")
    p.add_argument("--partition", type=int, help="send every record to this partition")
    p.add_argument("--acks", choices=["0", "1", "all"], default="all",
                   help="all (default): the idempotent producer, no duplicates on retries; 0 or 1 turn "
                        "idempotence off")
    p.add_argument("--linger-ms", type=int, default=5)
    p.add_argument("--input", "-i", metavar="FILE", help="read lines from FILE instead of stdin")
    p.add_argument("--print-metadata", action="store_true",
                   help="print one JSON line per acknowledged record: partition, offset, key (in input "
                        "order, written out as each batch is acknowledged)")
    p.add_argument("--delivery-timeout-ms", type=int, metavar="MS",
                   help="keep retrying a record for this long (through broker restarts) before giving up "
                        "(default: 3 x --timeout-ms, at least 30000)")
    add_client_options(p)
    p.set_defaults(func=produce)

    p = sub.add_parser("consume", help="print records of a topic", epilog=CONSUME_EPILOG,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("topic")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--from-beginning", action="store_true", help="start at the earliest offset")
    where.add_argument("--offset", type=int, help="start at this offset (needs --partition)")
    where.add_argument("--from-time", metavar="T", type=time_arg,
                       help=f"start at the first record at or after T ({TIME_HELP})")
    p.add_argument("--partition", type=int, help="read only this partition")
    p.add_argument("--group", "-g", metavar="GROUP",
                   help="join consumer group GROUP: share the partitions, resume from its committed offsets "
                        "(--from-beginning then applies to partitions without one)")
    p.add_argument("--max", "--max-messages", dest="max", type=int, help="exit after N records")
    p.add_argument("--format", "-f", type=format_arg, default="plain", metavar="FORMAT",
                   help=FORMAT_HELP.replace("%", "%%"))  # argparse expands %-fields in help
    p.add_argument("--output", "-o", choices=["table", "json"],
                   help="json: the same as --format json (table: print per --format)")
    p.add_argument("--print-key", action="store_true",
                   help="plain format: print KEY<sep>VALUE (--format '%%p %%o %%k %%s' adds partition and offset)")
    p.add_argument("--key-separator", default="\t", metavar="SEP", help="separator for --print-key (default tab)")
    p.add_argument("--idle-timeout-ms", type=int, metavar="MS", help="exit after MS without a new record")
    p.add_argument("--skip-corrupt", action="store_true",
                   help="skip damaged records with a warning on stderr (default: stop with an error)")
    add_client_options(p)
    p.set_defaults(func=consume, validate=_check_consume_args)


def _lines(path: str | None) -> BinaryIO:
    if path is None:
        return sys.stdin.buffer
    try:
        return open(path, "rb")
    except OSError as exc:
        fail(f"cannot read {path}: {exc.strerror}")


def produce(args: argparse.Namespace) -> int:
    headers = []
    for h in args.header or []:
        if "=" not in h:
            fail(f"header {h!r} must look like NAME=VALUE")
        name, value = h.split("=", 1)
        headers.append((name, value.encode()))
    sep = args.key_separator.encode() if args.key_separator else None
    with Admin(args.bootstrap, timeout_ms=args.timeout_ms) as admin:
        _check_topic(admin, args.topic)
    request_timeout = max(args.timeout_ms, 1000)
    delivery_timeout = args.delivery_timeout_ms or max(args.timeout_ms * 3, 30_000)
    producer = Producer(args.bootstrap, acks=-1 if args.acks == "all" else int(args.acks), linger_ms=args.linger_ms,
                        request_timeout_ms=request_timeout, delivery_timeout_ms=delivery_timeout)
    acks = _AckWriter(args.print_metadata)
    start = time.monotonic()
    size = _file_size(args.input)
    try:
        with ProgressBar(f"producing to {args.topic}", size, unit="bytes read",
                         stdout_is_output=args.print_metadata) as bar:
            _produce_lines(args, producer, acks, sep, headers, bar)
        # Every record is acknowledged or failed within delivery_timeout_ms (plus a request in flight).
        producer.flush(timeout=(delivery_timeout + request_timeout) / 1000 + 5)
    except RequestTimeoutError:
        pass  # what is still unacknowledged is counted below
    finally:
        try:
            producer.close(timeout=0)  # (what is still pending fails now and is counted)
        except RequestTimeoutError:
            pass
        acks.finish(timeout=10)
    elapsed = time.monotonic() - start
    failed = acks.sent - acks.acked
    if failed:
        err_console.print(f"[red]{failed} of {acks.sent} records were not acknowledged[/] (gave up after "
                          f"{elapsed:.1f} s): {acks.first_error or 'no reply'}")
        return 1
    err_console.print(f"produced {acks.sent} records to {args.topic}")
    return 0


def _file_size(path: str | None) -> int | None:
    """The input's size for the progress bar (None for stdin or a pipe)."""
    if path is None:
        return None
    try:
        return os.stat(path).st_size or None
    except OSError:
        return None


def _produce_lines(args: argparse.Namespace, producer: Producer, acks: "_AckWriter", sep: bytes | None,
                   headers: list, bar: ProgressBar) -> None:
    for raw in _lines(args.input):
        bar.advance(len(raw))
        line = raw.rstrip(b"\r\n") if raw.endswith(b"\n") else raw
        key = None
        if sep is not None and sep in line:
            key, line = line.split(sep, 1)
        acks.add(key, producer.send(args.topic, line, key, partition=args.partition, headers=headers or None))


class _AckWriter:
    """Waits for the futures of the records sent, in input order, on a thread of its own: counts
    the acknowledged ones and, with ``--print-metadata``, prints each acknowledged record and flushes
    stdout whenever the next future is not complete yet.  So every acknowledged batch is on stdout
    as soon as it is acknowledged, not when a buffer fills: a file of acknowledgements is as
    current as it can be when something crashes."""

    def __init__(self, print_metadata: bool) -> None:
        self.print_metadata = print_metadata
        self.sent = 0
        self.acked = 0
        self.first_error: BaseException | None = None
        self._queue: queue.Queue = queue.Queue(maxsize=50_000)  # back-pressure on reading the input
        self._thread = threading.Thread(target=self._run, name="fabric-produce-acks", daemon=True)
        self._thread.start()

    def add(self, key: bytes | None, future: Any) -> None:
        self.sent += 1
        self._queue.put((key, future))

    def finish(self, timeout: float) -> None:
        try:
            self._queue.put(None, timeout=timeout)
        except queue.Full:
            return  # the thread is stuck on a future: what it did not count was not acknowledged
        self._thread.join(timeout)

    def _run(self) -> None:
        write = sys.stdout.write
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                sys.stdout.flush()
                item = self._queue.get()
            if item is None:
                break
            key, fut = item
            if not fut.done():
                sys.stdout.flush()
            try:
                md = fut.result()
            except Exception as exc:
                self.first_error = self.first_error or exc
                continue
            self.acked += 1
            if self.print_metadata:
                write(json.dumps({"partition": md.partition, "offset": md.offset,
                                  "key": key.decode("utf-8", "replace") if key is not None else None}) + "\n")
        sys.stdout.flush()


def _check_topic(admin: Admin, topic: str) -> None:
    """Fail early and clearly for an unknown topic (the broker creates it if it allows auto-creation)."""
    meta = admin.metadata([topic], allow_auto_create=True)
    if "error" in meta["topics"][0]:
        raise exception_for(meta["topics"][0]["error"])


def _check_consume_args(args: argparse.Namespace) -> None:
    """Usage errors of option combinations, found before the broker is contacted (exit 2)."""
    if args.group is not None:
        for flag, given in (("--partition", args.partition), ("--offset", args.offset),
                            ("--from-time", args.from_time)):
            if given is not None:
                usage_error(f"--group reads where the group left off; it cannot be combined with {flag} "
                            f"(see `fabric group reset-offsets`)")
    elif args.offset is not None and args.partition is None:
        usage_error("--offset needs --partition (offsets are per partition)")
    if args.output == "json" and args.format != "plain" and args.format != "json":
        usage_error("--output json prints JSON; it cannot be combined with --format " + repr(args.format))


def consume(args: argparse.Namespace) -> int:
    if args.group is not None:
        return _consume_group(args)
    consumer = Consumer(args.bootstrap, auto_offset_reset="earliest" if args.from_beginning else "latest",
                        request_timeout_ms=args.timeout_ms)
    with consumer.closing_on_signals() as stop:
        with Admin(args.bootstrap, timeout_ms=args.timeout_ms) as admin:
            n = admin.partitions_for(args.topic)
        if args.partition is not None:
            if not 0 <= args.partition < n:
                fail(f"topic {args.topic!r} has partitions 0-{n - 1}, not {args.partition}")
            consumer.assign([(args.topic, args.partition)])
        else:
            consumer.assign([(args.topic, p) for p in range(n)])
        if args.offset is not None:
            consumer.seek((args.topic, args.partition), args.offset)
        elif args.from_time:
            consumer.seek_to_timestamp(parse_time_ms(args.from_time))
        elif args.from_beginning:
            consumer.seek_to_beginning()
        else:
            consumer.seek_to_end()
        return _consume_loop(consumer, args, stop=stop)


def _consume_group(args: argparse.Namespace) -> int:
    with Admin(args.bootstrap, timeout_ms=args.timeout_ms) as admin:
        admin.partitions_for(args.topic)  # a clear error for an unknown topic
    assigned: list[float] = []  # the idle clock starts with the first assignment (joining takes a while)

    def on_assigned(tps: list) -> None:
        assigned.append(time.monotonic())

    consumer = Consumer(args.bootstrap, group_id=args.group, auto_offset_reset="earliest" if args.from_beginning
                        else "latest", request_timeout_ms=args.timeout_ms, client_id="fabric-cli")
    with consumer.closing_on_signals() as stop:  # closing commits what was printed and leaves the group
        consumer.subscribe([args.topic], on_assigned=on_assigned)
        return _consume_loop(consumer, args, idle_from=assigned, stop=stop)


def _consume_loop(consumer: Consumer, args: argparse.Namespace, idle_from: list[float] | None = None,
                  stop: ShutdownSignals | None = None) -> int:
    render = renderer("json" if args.output == "json" else args.format, args.print_key, args.key_separator)
    with ProgressBar(f"consuming {args.topic}", args.max) as bar:
        _consume_records(consumer, args, idle_from, stop, render, bar)
    sys.stdout.flush()
    return 0


def _consume_records(consumer: Consumer, args: argparse.Namespace, idle_from: list[float] | None,
                     stop: ShutdownSignals | None, render: Any, bar: ProgressBar) -> int:
    count = 0
    write = sys.stdout.write
    last_record = time.monotonic()
    while (args.max is None or count < args.max) and not (stop is not None and stop.requested):
        want = None if args.max is None else args.max - count
        try:
            records = consumer.poll(timeout_ms=200, max_records=want)
        except CorruptRecordError as exc:
            sys.stdout.flush()
            if not args.skip_corrupt or exc.skip_offset is None:
                fail(f"{exc.message}" + ("" if args.skip_corrupt else " (--skip-corrupt skips damaged records)"))
            err_console.print(f"warning: skipped damaged records: {exc.message}", markup=False)
            consumer.seek((exc.topic, exc.partition), exc.skip_offset)
            continue
        if records:
            last_record = time.monotonic()
            write("".join(map(render, records)))
            count += len(records)
            bar.advance(len(records))
        elif args.idle_timeout_ms is not None and (idle_from is None or idle_from):
            since = max(last_record, idle_from[-1]) if idle_from else last_record
            if (time.monotonic() - since) * 1000 >= args.idle_timeout_ms:
                break
    return count
