"""The controller's decisions about brokers: registration, heartbeats, controlled shutdown.

A mixin of ``ControllerLogic`` (``logic.py``, whose rules 2, 6 and 7 these methods implement),
apart so that neither module outgrows a reading: the same pure rules (methods take ``now_ms`` and
return ``(records, error, reply)``, reading the committed state overlaid with the pending records).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Iterable

from ..protocol.errors import FabricError
from .codes import STALE_BROKER_EPOCH, UNKNOWN_BROKER
from .metadata import BrokerRecord, MetadataState, PartitionRecord, TopicRecord

log = logging.getLogger("fabric.controller.logic")

__all__ = ["BrokerDecisions", "check_int"]

Decision = tuple[list[dict[str, Any]], str | None, dict[str, Any]]


def check_int(name: str, value: Any, lo: int = 0, hi: int = 2**63 - 1) -> int:
    """``value`` as an int in [lo, hi] (a whole float too: JSON-ish clients send them);
    INVALID_FIELD naming ``name`` otherwise (a malformed request must not reach a decision)."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise FabricError("INVALID_FIELD", f"{name} must be an integer in [{lo}, {hi}], not {value!r:.60}")
    return value


_int = check_int


class BrokerDecisions:
    """Mixed into ``ControllerLogic``; uses its sessions and pending view (``_broker``,
    ``_reconcile``, ``_broker_record``...)."""

    state: MetadataState
    config: Any
    _sessions: dict[int, int]
    _shutting_down: set[int]
    _brokers: dict[int, BrokerRecord]

    if TYPE_CHECKING:  # (ControllerLogic's)
        def _broker(self, b: int) -> BrokerRecord | None: ...
        def _broker_ids(self) -> list[int]: ...
        def _broker_record(self, kind: str, view: BrokerRecord) -> dict[str, Any]: ...
        def _part(self, topic: TopicRecord, p: int) -> PartitionRecord: ...
        def _topic_views(self) -> list[TopicRecord]: ...
        def _reconcile(self, excluded: Iterable[int] = (), lost: Iterable[int] = (),
                       stay: Iterable[int] = ()) -> list[dict[str, Any]]: ...

    def connection_lost(self, broker_id: int, now_ms: int, grace_ms: int) -> None:
        """A hint from the shell: ``broker_id``'s connection to this controller closed (its process
        died: the kernel reset its sockets).  Its session now ends ``grace_ms`` from now unless it
        heartbeats (an alive broker reconnects and heartbeats well within the grace), instead of a
        full session timeout after its last heartbeat.  Only ever shortens a session; a paused or
        partitioned broker, whose connections stay open, still gets the whole timeout."""
        last = self._sessions.get(broker_id)
        if last is None:
            return
        self._sessions[broker_id] = min(last, now_ms - self.config.session_timeout_ms + grace_ms)

    def register(self, broker_id: int, incarnation: int, host: str, port: int, now_ms: int, pub_port: int = 0,
                 rack: str | None = None, controller_port: int | None = None,
                 intact_since: int | None = None) -> Decision:
        """Rules 2 and 7 (``intact_since``: the oldest incarnation since which this broker's logs
        hold every write, None when they may have lost some: ``fabric/broker/restart.py``)."""
        broker_id = _int("broker_id", broker_id, 0, 2**31 - 1)
        incarnation = _int("incarnation", incarnation)
        if intact_since is not None:
            intact_since = _int("intact_since", intact_since)
        port, pub_port = _int("port", port, 1, 65535), _int("pub_port", pub_port, 0, 65535)
        if controller_port is not None:
            controller_port = _int("controller_port", controller_port, 0, 65535)
        if not isinstance(host, str) or not 0 < len(host) <= 255:
            raise FabricError("INVALID_FIELD", f"host must be a string of 1-255 characters, not {host!r:.60}")
        if rack is not None and (not isinstance(rack, str) or not 0 < len(rack) <= 255):
            raise FabricError("INVALID_FIELD", f"rack must be null or a string of 1-255 characters, not {rack!r:.60}")
        old = self._broker(broker_id)
        if old is not None and incarnation < old.incarnation:
            return [], STALE_BROKER_EPOCH, {"incarnation": old.incarnation}
        self._sessions[broker_id] = now_ms
        self._shutting_down.discard(broker_id)
        endpoint = (host, port, pub_port, rack, controller_port)
        if old is not None and old.incarnation == incarnation and not old.fenced and \
                (old.host, old.port, old.pub_port, old.rack, old.controller_port) == endpoint:
            return [], None, {"metadata_offset": self.state.offset}  # a retry: already registered
        records: list[dict[str, Any]] = []
        unclean = old is not None and old.incarnation != incarnation and (
            intact_since is None or intact_since > old.incarnation)
        if unclean:  # rule 7
            log.warning("broker %d registers incarnation %d after an unclean end of incarnation %d (previous "
                        "writes intact since incarnation %s): it leaves every ISR until it catches up again",
                        broker_id, incarnation, old.incarnation, intact_since)
            records += self._reconcile([broker_id], lost=[broker_id])
        elif old is not None and old.incarnation != incarnation and not old.fenced:
            log.info("broker %d registers incarnation %d: its incarnation %d ended cleanly: its leaderships move",
                     broker_id, incarnation, old.incarnation)
            records += self._reconcile([broker_id], stay=[broker_id])
        view = BrokerRecord(broker_id, host, port, pub_port, rack, incarnation, 0, False, controller_port)
        self._brokers[broker_id] = view
        records.append({"type": "register_broker", "id": broker_id, "host": host, "port": port, "pub_port": pub_port,
                        "rack": rack, "incarnation": incarnation, "controller_port": controller_port})
        records += self._reconcile()
        return records, None, {"metadata_offset": self.state.offset}

    def heartbeat(self, broker_id: int, incarnation: int, now_ms: int, metadata_offset: int = 0,
                  wants_shutdown: bool = False) -> Decision:
        """Keep the session; unfence a caught-up fenced broker (rule 2); controlled shutdown (rule 6)."""
        broker_id, incarnation = _int("broker_id", broker_id), _int("incarnation", incarnation)
        metadata_offset = _int("metadata_offset", metadata_offset)
        if not isinstance(wants_shutdown, bool):
            raise FabricError("INVALID_FIELD", f"wants_shutdown must be true or false, not {wants_shutdown!r:.60}")
        view = self._broker(broker_id)
        if view is None or incarnation > view.incarnation:
            return [], UNKNOWN_BROKER, {}
        if incarnation < view.incarnation:
            return [], STALE_BROKER_EPOCH, {"incarnation": view.incarnation}
        self._sessions[broker_id] = now_ms
        if wants_shutdown:
            return self._shutdown(view)
        self._shutting_down.discard(broker_id)
        records: list[dict[str, Any]] = []
        if view.fenced and metadata_offset >= view.epoch:
            log.info("broker %d is back (metadata offset %d): unfencing it", broker_id, metadata_offset)
            records.append(self._broker_record("unfence_broker", view))
            records += self._reconcile()
        fenced = view.fenced and not records
        return records, None, {"fenced": fenced, "metadata_offset": self.state.offset, "shutdown_ready": False}

    def controlled_shutdown(self, broker_id: int, now_ms: int, incarnation: int | None = None,
                            metadata_offset: int = 0) -> Decision:
        """The same as a heartbeat with ``wants_shutdown`` (``incarnation`` None: the registered one)."""
        if incarnation is None:
            view = self._broker(_int("broker_id", broker_id))
            if view is None:
                return [], UNKNOWN_BROKER, {}
            incarnation = view.incarnation
        return self.heartbeat(broker_id, incarnation, now_ms, metadata_offset, wants_shutdown=True)

    def _shutdown(self, view: BrokerRecord) -> Decision:
        if view.id not in self._shutting_down:
            log.info("broker %d asks for a controlled shutdown: moving its leaderships", view.id)
        self._shutting_down.add(view.id)
        records = self._reconcile()
        ready = not any(self._part(t, p).leader == view.id
                        for t in self._topic_views() for p in range(len(t.partitions)))
        if ready and not view.fenced:
            records.append(self._broker_record("fence_broker", view))
        return records, None, {"fenced": ready or view.fenced, "metadata_offset": self.state.offset,
                               "shutdown_ready": ready}

    def broker_status(self, now_ms: int) -> list[dict[str, Any]]:
        """Per broker: id, endpoint, rack, incarnation, fenced, ms since its last heartbeat (None:
        none since this controller took over), whether it is shutting down, and whether it is
        decommissioned (logic_admin rule 11)."""
        out = []
        for b in self._broker_ids():
            view = self._broker(b)
            if view is None:
                continue
            last = self._sessions.get(b)
            out.append({"id": b, "host": view.host, "port": view.port, "rack": view.rack,
                        "incarnation": view.incarnation, "fenced": view.fenced,
                        "since_heartbeat_ms": None if last is None else now_ms - last,
                        "shutting_down": b in self._shutting_down, "decommissioned": b in self._retiring})
        return out

