"""Network partitions with namespaces (fabric/testing/netns.py): a cut stops traffic between two
namespaces and heal restores it; a broker in a namespace becomes unreachable and comes back; every
namespace and link is deleted, also after a failure."""

import subprocess
import sys
import time

import pytest

from fabric.client.admin import Admin
from fabric.client.connection import RequestTimeoutError
from fabric.testing import netns
from fabric.testing.netns import NetworkLab

pytestmark = pytest.mark.process

ECHO_SERVER = """
import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], 7000)); s.listen(16)
while True:
    c, _ = s.accept(); c.sendall(b"hi"); c.close()
"""
PROBE = """
import socket, sys
try:
    c = socket.create_connection((sys.argv[1], 7000), timeout=float(sys.argv[2])); sys.exit(0 if c.recv(2) == b"hi" else 3)
except OSError:
    sys.exit(1)
"""


def _reachable(lab, src, dst, timeout=1.0) -> bool:
    return lab.run(src, [sys.executable, "-c", PROBE, lab.address(dst), str(timeout)]).returncode == 0


def _until(condition, seconds=10.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
    return False


@pytest.fixture
def lab():
    reason = netns.unavailable_reason()
    assert reason is None, f"network namespaces are needed for this test: {reason}"
    lab = NetworkLab(2)
    try:
        yield lab.setup()
    finally:
        lab.close()
        assert lab.names() == [], "namespaces left behind"


def test_cut_stops_traffic_between_namespaces_and_heal_restores_it(lab):
    lab.popen(2, [sys.executable, "-c", ECHO_SERVER, lab.address(2)], stdout=subprocess.DEVNULL)
    assert _until(lambda: _reachable(lab, 1, 2)), "the echo server never became reachable"
    lab.cut(2)
    assert not _reachable(lab, 1, 2, timeout=1.0)  # SYNs vanish: the connect times out
    lab.heal(2)
    assert _until(lambda: _reachable(lab, 1, 2)), "healing did not restore traffic"


def test_a_broker_in_a_namespace_is_cut_off_and_back(lab, tmp_path):
    broker = lab.broker(1, tmp_path / "data")
    try:
        broker.start()
        with Admin(broker.bootstrap, timeout_ms=500) as admin:
            assert admin.api_versions()["broker"]["node_id"] == 0
            lab.cut(1)
            with pytest.raises(RequestTimeoutError):
                admin.api_versions()
            lab.heal(1)

            def answers() -> bool:
                try:
                    admin.api_versions()
                    return True
                except RequestTimeoutError:
                    return False
            assert _until(answers, 20.0)
    finally:
        broker.kill()


def test_a_failed_setup_leaves_nothing_behind():
    assert netns.unavailable_reason() is None
    lab = NetworkLab(2)
    # a real failure half-way: the name of node 2's veth is taken, so `ip link add` refuses it
    # after the hub and two namespaces exist
    squatter = f"{lab.prefix}a2"
    netns._ip("link", "add", squatter, "type", "veth", "peer", "name", f"{lab.prefix}z2")
    try:
        with pytest.raises(RuntimeError, match="File exists"):
            lab.setup()
        assert lab.names() == [] and lab.created_ns == []
        links = netns._ip("link", "show", check=False).stdout
        assert [ln for ln in links.splitlines() if lab.prefix in ln and squatter not in ln and "z2" not in ln] == []
    finally:
        netns._ip("link", "del", squatter, check=False)


def test_unavailable_reason_names_the_missing_privilege(monkeypatch):
    monkeypatch.setattr(netns.os, "geteuid", lambda: 1000)
    assert "need root" in netns.unavailable_reason()
    monkeypatch.setattr(netns.os, "geteuid", lambda: 0)
    monkeypatch.setattr(netns.shutil, "which", lambda name: None)
    assert "iproute2" in netns.unavailable_reason()
    with pytest.raises(netns.NetnsUnavailable, match="iproute2"):
        NetworkLab(1).setup()
