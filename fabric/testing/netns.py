"""Network partitions for process tests: Linux network namespaces joined by a bridge.

Why namespaces: killing a process is not a partition.  A partition leaves both sides running,
each believing the other is gone, with TCP connections that neither break nor deliver -- the
case that elects a second leader, fences a broker or strands an ``acks=all`` producer.  Here each
node gets its own namespace (its own interfaces, addresses and loopback) with a veth link to a
bridge; ``cut`` sets the node's bridge port down (packets stop both ways, connections hang, as in
a switch failure) and ``heal`` sets it up again.

Layout, all private to the lab (the root namespace gets one link, only with ``host_link``)::

    node ns "<p>n1" eth0 10.213.X.1 --veth-- "<p>b1" --+
    node ns "<p>n2" eth0 10.213.X.2 --veth-- "<p>b2" --+-- bridge br0 in hub ns "<p>h"
    root ns "<p>r" 10.213.X.254      --veth-- "<p>q" --+   (host_link: the test process reaches nodes)

The bridge is connected to nothing else: the addresses are private to this machine and no
route leads outside.  Every namespace and link is deleted in ``close`` (deleting a namespace
deletes the veth ends in it), also after a failed ``setup``; use the lab as a context manager.

Needs root and iproute2 (``ip``); ``unavailable_reason()`` says why not, when not.
"""

from __future__ import annotations

import logging
import os
import random
import shutil
import subprocess
from pathlib import Path
from typing import Sequence

from .processes import BrokerProcess, free_port

log = logging.getLogger(__name__)

SUBNET_PREFIX = "10.213"  # 10.213.X.0/24 per lab; X chosen free of the root namespace's routes
HOST_OCTET = 254


class NetnsUnavailable(RuntimeError):
    """Network namespaces cannot be used here; the message says why."""


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    done = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)
    if check and done.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {done.stderr.strip() or done.returncode}")
    return done


def unavailable_reason() -> str | None:
    """Why network namespaces cannot be used by this process, or None when they can (probed
    by creating and deleting one namespace)."""
    if os.geteuid() != 0:
        return "network namespaces need root (this process runs as uid %d)" % os.geteuid()
    if shutil.which("ip") is None:
        return "the `ip` command (iproute2) is not installed"
    probe = f"fbprobe{os.getpid()}"
    done = _ip("netns", "add", probe, check=False)
    if done.returncode != 0:
        return f"`ip netns add` failed: {done.stderr.strip()} (a container without CAP_SYS_ADMIN?)"
    _ip("netns", "del", probe, check=False)
    return None


class NetworkLab:
    """Namespaces ``1..nodes`` on one bridge; ``cut(n)`` / ``heal(n)`` partition node ``n``."""

    def __init__(self, nodes: int, *, host_link: bool = True) -> None:
        if not 1 <= nodes <= 200:
            raise ValueError(f"nodes must be 1..200, not {nodes}")
        self.nodes = nodes
        self.host_link = host_link
        # interface names have at most 15 characters: "fb" + 4 digits + 2 hex + kind + index
        self.prefix = f"fb{os.getpid() % 10000:04d}{random.randrange(256):02x}"
        self.hub = f"{self.prefix}h"
        self.third_octet = self._free_octet()
        self.created_ns: list[str] = []
        self.root_link: str | None = None
        self.processes: list[subprocess.Popen] = []

    # ------------------------------------------------------------------ names and addresses
    def namespace(self, node: int) -> str:
        self._check(node)
        return f"{self.prefix}n{node}"

    def address(self, node: int) -> str:
        self._check(node)
        return f"{SUBNET_PREFIX}.{self.third_octet}.{node}"

    @property
    def host_address(self) -> str:
        return f"{SUBNET_PREFIX}.{self.third_octet}.{HOST_OCTET}"

    def _check(self, node: int) -> None:
        if not 1 <= node <= self.nodes:
            raise ValueError(f"no node {node} in this lab (1..{self.nodes})")

    @staticmethod
    def _free_octet() -> int:
        used = _ip("-4", "route", "show", check=False).stdout
        for _ in range(100):
            octet = random.randrange(1, 250)
            if f"{SUBNET_PREFIX}.{octet}." not in used:
                return octet
        raise NetnsUnavailable(f"no free {SUBNET_PREFIX}.X.0/24 subnet in the root namespace's routes")

    # ------------------------------------------------------------------ lifecycle
    def setup(self) -> "NetworkLab":
        """Create everything; on any failure, delete what was made and raise."""
        reason = unavailable_reason()
        if reason:
            raise NetnsUnavailable(reason)
        try:
            self._add_ns(self.hub)
            _ip("-n", self.hub, "link", "add", "br0", "type", "bridge")
            _ip("-n", self.hub, "link", "set", "br0", "up")
            for node in range(1, self.nodes + 1):
                ns = self.namespace(node)
                self._add_ns(ns)
                inside, port = f"{self.prefix}a{node}", f"{self.prefix}b{node}"
                _ip("link", "add", inside, "type", "veth", "peer", "name", port)
                _ip("link", "set", inside, "netns", ns)
                _ip("link", "set", port, "netns", self.hub)
                _ip("-n", ns, "link", "set", inside, "name", "eth0")
                _ip("-n", ns, "addr", "add", f"{self.address(node)}/24", "dev", "eth0")
                _ip("-n", ns, "link", "set", "eth0", "up")
                _ip("-n", ns, "link", "set", "lo", "up")
                self._attach(port)
            if self.host_link:
                root, port = f"{self.prefix}r", f"{self.prefix}q"
                _ip("link", "add", root, "type", "veth", "peer", "name", port)
                self.root_link = root
                _ip("link", "set", port, "netns", self.hub)
                _ip("addr", "add", f"{self.host_address}/24", "dev", root)
                _ip("link", "set", root, "up")
                self._attach(port)
        except BaseException:
            self.close()
            raise
        log.info("network lab %s: %d nodes on %s.%d.0/24", self.prefix, self.nodes, SUBNET_PREFIX, self.third_octet)
        return self

    def _add_ns(self, name: str) -> None:
        _ip("netns", "add", name)
        self.created_ns.append(name)
        _ip("-n", name, "link", "set", "lo", "up")

    def _attach(self, port: str) -> None:
        _ip("-n", self.hub, "link", "set", port, "master", "br0")
        _ip("-n", self.hub, "link", "set", port, "up")

    def close(self) -> None:
        """Kill the processes started with ``popen``, delete every namespace and link made.
        Never raises: teardown must reach everything; what failed is logged."""
        for proc in self.processes:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
        self.processes.clear()
        if self.root_link is not None:
            done = _ip("link", "del", self.root_link, check=False)
            if done.returncode != 0 and "Cannot find" not in done.stderr:
                log.error("could not delete link %s: %s", self.root_link, done.stderr.strip())
            self.root_link = None
        for ns in reversed(self.created_ns):
            done = _ip("netns", "del", ns, check=False)
            if done.returncode != 0:
                log.error("could not delete namespace %s: %s", ns, done.stderr.strip())
        self.created_ns.clear()

    def __enter__(self) -> "NetworkLab":
        return self.setup()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ faults
    def cut(self, node: int) -> None:
        """Partition ``node`` from every other node (and from the host link)."""
        _ip("-n", self.hub, "link", "set", f"{self.prefix}b{node}", "down")

    def heal(self, node: int) -> None:
        _ip("-n", self.hub, "link", "set", f"{self.prefix}b{node}", "up")

    # ------------------------------------------------------------------ running things inside
    def exec_prefix(self, node: int) -> list[str]:
        """The argv prefix that runs a command inside ``node``'s namespace."""
        return ["ip", "netns", "exec", self.namespace(node)]

    def run(self, node: int, argv: Sequence[str], timeout: float = 30.0) -> subprocess.CompletedProcess:
        return subprocess.run([*self.exec_prefix(node), *argv], capture_output=True, text=True, timeout=timeout)

    def popen(self, node: int, argv: Sequence[str], **kwargs: object) -> subprocess.Popen:
        """Start a process inside ``node``'s namespace; ``close`` kills and reaps it."""
        proc = subprocess.Popen([*self.exec_prefix(node), *argv], **kwargs)  # type: ignore[call-overload]
        self.processes.append(proc)
        return proc

    def broker(self, node: int, data_dir: str | Path, port: int | None = None,
               extra_args: Sequence[str] = ()) -> BrokerProcess:
        """A ``BrokerProcess`` (not started) that runs in ``node``'s namespace on its address;
        reachable from the test process through the host link.  The caller kills it (``kill``)."""
        return BrokerProcess(data_dir, port=port or free_port(), extra_args=extra_args, host=self.address(node),
                             command_prefix=self.exec_prefix(node))

    def names(self) -> list[str]:
        """Namespaces of this lab that exist now (for cleanup checks)."""
        listed = _ip("netns", "list", check=False).stdout.split()
        return [n for n in listed if n.startswith(self.prefix)]
