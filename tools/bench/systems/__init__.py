"""One module per system under test; each defines ``System`` subclasses decorated ``@register``.

Adding a system: write ``systems/<name>.py`` with one ``System`` subclass and add the module to
``MODULES``.  Modules are imported on demand (not here at package import), because each module is
also run as ``python -m`` for its client child process and must not be registered twice.
"""

from __future__ import annotations

import importlib

from tools.bench.core import SYSTEMS, System

MODULES = (
    "tools.bench.systems.fabric_system",
    "tools.bench.systems.redis_streams",
    "tools.bench.systems.nats_jetstream",
)


def load_all() -> dict[str, type[System]]:
    """Import every system module and return the registry, keyed by ``--systems`` name."""
    for module in MODULES:
        importlib.import_module(module)
    return SYSTEMS
