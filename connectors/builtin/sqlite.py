"""The SQLite source and sink: the generic SQL tasks (``sql_source.py``, ``sql_sink.py``) over
``SqliteDialect``.  SQLite is the embedded default: no server, a file path is the whole config."""

from __future__ import annotations

from typing import Any

from ..api import Field, SinkConnector, SourceConnector
from .sql import SINK_CONFIG, SOURCE_CONFIG, SqliteDialect, source_task_configs, validate_sink, validate_source
from .sql_sink import SqlSinkTask
from .sql_source import SqlSourceTask


class SqliteSourceTask(SqlSourceTask):
    dialect_class = SqliteDialect


class SqliteSinkTask(SqlSinkTask):
    dialect_class = SqliteDialect


class SqliteSourceConnector(SourceConnector):
    """Copies SQLite tables (or a query) into topics; see ``sql_source.py`` for the modes."""

    CONFIG = {"database": Field("str", required=True, doc="path of the SQLite file"), **SOURCE_CONFIG}
    task_class = SqliteSourceTask

    def validate(self, config: dict[str, Any]) -> list[tuple[str, str]]:
        return validate_source(config)

    def task_configs(self, config: dict[str, Any], tasks_max: int) -> list[dict[str, Any]]:
        return source_task_configs(config, tasks_max)


class SqliteSinkConnector(SinkConnector):
    """Writes topics into SQLite tables; see ``sql_sink.py``."""

    CONFIG = {"database": Field("str", required=True, doc="path of the SQLite file (created if missing)"),
              **SINK_CONFIG}
    task_class = SqliteSinkTask

    def validate(self, config: dict[str, Any]) -> list[tuple[str, str]]:
        return validate_sink(config)
