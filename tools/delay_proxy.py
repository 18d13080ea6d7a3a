"""A TCP proxy that delays every chunk by a fixed time in each direction, order kept.

Why: on one machine, loopback has no round-trip time worth the name, so what a network between
consumer and broker does to end-to-end latency (and what fetch pipelining buys back) cannot be
seen.  The kernel's netem is not always available (it is not on this project's machines), so this
puts the delay in user space.  Clients connect to ``--listen``; the proxy connects to ``--target``
and forwards bytes both ways, each chunk ``--delay-ms`` after it arrived (ZeroMQ's framing
passes through untouched).  Being Python, it adds some latency of its own: compare runs through
the same proxy, not a proxied run with a direct one.

    fabric broker --port 7171 &
    python tools/delay_proxy.py --listen 7272 --target 7171 --delay-ms 1 &
    fabric perf e2e --bootstrap 127.0.0.1:7272 --topic e2e --rate 1000 --seconds 5 --pipeline-depth 1
    fabric perf e2e --bootstrap 127.0.0.1:7272 --topic e2e --rate 1000 --seconds 5 --pipeline-depth 2

Loopback only: it listens on and connects to 127.0.0.1, nothing else.  Stops on Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import socket
import time

log = logging.getLogger("delay_proxy")


async def _forward(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, delay: float) -> None:
    """Copy ``reader`` to ``writer``, each chunk ``delay`` seconds after it was read."""
    queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

    async def deliver() -> None:
        while True:
            due, data = await queue.get()
            if not data:
                writer.close()
                return
            wait = due - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            writer.write(data)
            await writer.drain()

    sender = asyncio.create_task(deliver())
    try:
        while True:
            data = await reader.read(1 << 16)
            queue.put_nowait((time.monotonic() + delay, data))
            if not data:
                break
        await sender
    except (ConnectionError, asyncio.CancelledError):
        sender.cancel()
        writer.close()


async def _serve(listen: int, target: int, delay: float) -> None:
    async def handle(client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        try:
            server_r, server_w = await asyncio.open_connection("127.0.0.1", target)
        except OSError as exc:
            log.warning("cannot reach 127.0.0.1:%d: %s", target, exc)
            client_w.close()
            return
        for w in (client_w, server_w):
            w.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        await asyncio.gather(_forward(client_r, server_w, delay), _forward(server_r, client_w, delay),
                             return_exceptions=True)

    server = await asyncio.start_server(handle, "127.0.0.1", listen)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    log.info("127.0.0.1:%d -> 127.0.0.1:%d, %.3f ms each way", listen, target, delay * 1000)
    async with server:
        await stop.wait()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--listen", type=int, required=True, help="loopback port clients connect to")
    ap.add_argument("--target", type=int, required=True, help="loopback port of the broker")
    ap.add_argument("--delay-ms", type=float, default=1.0, help="one-way delay (default 1 ms)")
    args = ap.parse_args()
    if not 0 <= args.delay_ms <= 10_000:
        ap.error("--delay-ms must be between 0 and 10000")
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    asyncio.run(_serve(args.listen, args.target, args.delay_ms / 1000))


if __name__ == "__main__":
    main()
