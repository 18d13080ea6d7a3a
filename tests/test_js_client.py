"""The Node.js client in tools/clients/js was written from SPEC.md alone (no Python source read).
Running it here proves, on every CI run, that the spec is enough for another language: the spec's
vectors check offline, and a live broker accepts its batches and serves them back."""

from __future__ import annotations

import pathlib
import shutil
import subprocess

import pytest

pytestmark = pytest.mark.process

JS = pathlib.Path(__file__).resolve().parent.parent / "tools" / "clients" / "js"
SPEC = pathlib.Path(__file__).resolve().parent.parent / "fabric" / "protocol" / "SPEC.md"


@pytest.fixture(scope="module")
def node_client():
    node, npm = shutil.which("node"), shutil.which("npm")
    assert node and npm, "Node.js >= 20.15 and npm are needed (.ci/run installs them)"
    if not (JS / "node_modules" / "zeromq").exists() or not (JS / "node_modules" / "cbor-x").exists():
        done = subprocess.run([npm, "install", "--no-audit", "--no-fund"], cwd=JS, capture_output=True, text=True,
                              timeout=600)
        assert done.returncode == 0, done.stderr[-2000:]
    return node


def test_spec_vectors_in_javascript(node_client):
    done = subprocess.run([node_client, "test-vectors.js", str(SPEC)], cwd=JS, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0 and "RESULT: PASS" in done.stdout, done.stdout[-3000:] + done.stderr[-2000:]


def test_javascript_client_produces_and_fetches(node_client, broker):
    done = subprocess.run([node_client, "demo.js", broker.bootstrap, "js-ci"], cwd=JS, capture_output=True,
                          text=True, timeout=180)
    assert done.returncode == 0 and "RESULT: PASS" in done.stdout, done.stdout[-3000:] + done.stderr[-2000:]
