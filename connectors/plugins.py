"""Finding connector classes by the name written in YAML.

Three ways, tried in this order: a built-in name (``file-source``, ``sqlite-sink``, ...); a name
registered by an installed distribution under the entry-point group ``fabric.connectors``
(``pip install`` of a plugin is enough, e.g. in its pyproject::

    [project.entry-points."fabric.connectors"]
    s3-sink = "fabric_s3:S3SinkConnector"

); or a ``module:Class`` path.  Built-ins are imported lazily so that a worker without
PostgreSQL never imports psycopg.
"""

from __future__ import annotations

import importlib
from importlib.metadata import entry_points

from .api import Connector

ENTRY_POINT_GROUP = "fabric.connectors"

BUILTIN: dict[str, str] = {
    "file-source": "connectors.builtin.file:FileSourceConnector",
    "file-sink": "connectors.builtin.file:FileSinkConnector",
    "datagen": "connectors.builtin.datagen:DatagenConnector",
    "sqlite-source": "connectors.builtin.sqlite:SqliteSourceConnector",
    "sqlite-sink": "connectors.builtin.sqlite:SqliteSinkConnector",
    "postgres-source": "connectors.builtin.postgres:PostgresSourceConnector",
    "postgres-sink": "connectors.builtin.postgres:PostgresSinkConnector",
    "webhook-source": "connectors.builtin.http:WebhookSourceConnector",
    "http-sink": "connectors.builtin.http:HttpSinkConnector",
    "mirror-source": "connectors.builtin.mirror:MirrorSourceConnector",
}


class PluginError(LookupError):
    pass


def _installed() -> dict[str, object]:
    return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}


def known_names() -> list[str]:
    return sorted({*BUILTIN, *_installed()})


def _import(path: str) -> type[Connector]:
    module, _, attr = path.partition(":")
    try:
        obj = getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as exc:
        raise PluginError(f"cannot load {path!r}: {exc}") from exc
    if not (isinstance(obj, type) and issubclass(obj, Connector)):
        raise PluginError(f"{path!r} is not a Connector subclass")
    return obj


def load_connector_class(name: str) -> type[Connector]:
    """The class for a YAML ``class:`` value; ``PluginError`` names what went wrong."""
    if name in BUILTIN:
        return _import(BUILTIN[name])
    ep = _installed().get(name)
    if ep is not None:
        try:
            obj = ep.load()  # type: ignore[attr-defined]
        except Exception as exc:  # a broken plugin must not crash validation of the whole file
            raise PluginError(f"plugin {name!r} failed to load: {exc}") from exc
        if not (isinstance(obj, type) and issubclass(obj, Connector)):
            raise PluginError(f"plugin {name!r} is not a Connector subclass")
        return obj
    if ":" in name:
        return _import(name)
    raise PluginError(f"unknown connector class {name!r}")
