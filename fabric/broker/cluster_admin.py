"""The broker-port handlers of a cluster's administration: topic growth and configs
(``create_partitions``, ``alter_topic_configs``) and the operator's operations of SPEC 13.7
(``alter_partition_reassignments``, ``list_partition_reassignments``, ``decommission_broker``,
``elect_leaders``).

Why they are thin: the controller decides (``fabric/controller/logic_admin.py``); a broker only
forwards (``ClusterNode.forward``) and answers once its own metadata has applied the records the
decision wrote, so the client's next ``metadata`` already shows the change (the same rule as
``create_topics``).  A reply carries what the controller answered, minus its bookkeeping fields.
"""

from __future__ import annotations

from typing import Any, Callable

from ..clock import Now
from ..protocol.messages import ok_reply
from .replies import Outbox, Reply

__all__ = ["install"]

_BOOKKEEPING = ("op", "cid", "metadata_offset", "leader_id")


def install(core: Any) -> None:
    a = AdminHandlers(core)
    core.handlers.update({"create_partitions": a.create_partitions, "alter_topic_configs": a.alter_topic_configs,
                          "alter_partition_reassignments": a.alter_partition_reassignments,
                          "list_partition_reassignments": a.list_partition_reassignments,
                          "decommission_broker": a.decommission_broker, "elect_leaders": a.elect_leaders})


class AdminHandlers:
    def __init__(self, core: Any) -> None:
        self.core = core

    def _forward(self, peer: bytes, env: Any, header: dict[str, Any], now: Now,
                 shape: Callable[[dict[str, Any]], dict[str, Any]] | None = None) -> Outbox:
        def done(answer: dict[str, Any]) -> Outbox:
            if answer.get("error"):
                return [(peer, Reply({"op": env.op, "cid": env.cid, "error": answer["error"]}))]
            body = {k: v for k, v in answer.items() if k not in _BOOKKEEPING}
            return [(peer, Reply(ok_reply(env.op, env.cid, **(shape(body) if shape else body))))]
        self.core.cluster.forward(header, done, now.mono_ms)
        return []

    def create_partitions(self, peer, env, req, frames, now: Now) -> Outbox:
        return self._forward(peer, env, {"op": "create_partitions", "topic": req.topic, "count": req.count}, now,
                             lambda body: {"name": req.topic, "partitions": body.get("partitions", req.count)})

    def alter_topic_configs(self, peer, env, req, frames, now: Now) -> Outbox:
        return self._forward(peer, env, {"op": "alter_topic_configs", "topic": req.topic, "set": dict(req.set),
                                         "delete": list(req.delete)}, now)

    def alter_partition_reassignments(self, peer, env, req, frames, now: Now) -> Outbox:
        return self._forward(peer, env, {"op": "alter_partition_reassignments",
                                         "reassignments": [r.to_wire() for r in req.reassignments]}, now)

    def list_partition_reassignments(self, peer, env, req, frames, now: Now) -> Outbox:
        """From this broker's image (every broker has the same committed view)."""
        rows = []
        image = self.core.leadership.image
        for t in sorted(image.topics.values(), key=lambda t: t.name):
            for p, a in enumerate(t.partitions):
                if a.adding or a.removing:
                    rows.append({"topic": t.name, "partition": p, "replicas": list(a.replicas),
                                 "adding": list(a.adding), "removing": list(a.removing), "isr": list(a.isr),
                                 "leader": a.leader})
        return [(peer, Reply(ok_reply(env.op, env.cid, reassignments=rows)))]

    def decommission_broker(self, peer, env, req, frames, now: Now) -> Outbox:
        header: dict[str, Any] = {"op": "decommission_broker", "broker_id": req.broker_id}
        if req.cancel:
            header["cancel"] = True
        return self._forward(peer, env, header, now)

    def elect_leaders(self, peer, env, req, frames, now: Now) -> Outbox:
        header: dict[str, Any] = {"op": "elect_leaders"}
        if req.topics is not None:
            header["topics"] = list(req.topics)
        return self._forward(peer, env, header, now)
