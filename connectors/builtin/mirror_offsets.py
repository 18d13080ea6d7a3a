"""Offset translation for the mirror source (sans-I/O): offset syncs in, translated offsets out.

Why: a copy does not sit at its original's offset in the target (the target topic may hold older
records, the source may have lost its head to retention, a replay after a crash duplicates a few
records).  So a consumer group that fails over from the source cluster to the target cannot reuse
its committed offsets as they are.  Kafka's MirrorMaker 2 solves this with *offset syncs* and
*checkpoints*; this module is the same idea:

* An **offset sync** ``(upstream, downstream)`` of one partition says: every copy of an upstream
  record at offset >= ``upstream`` lies at a target offset >= ``downstream``.  The mirror records
  one when the worker has committed its progress (every record polled so far is acknowledged by the
  target): ``upstream`` is the next upstream offset to copy, ``downstream`` the target partition's
  end at that moment; everything copied afterwards is appended after that end.  At start it records
  one for its resume position and the target's end.
* **Translation** of a group's committed upstream offset ``c`` takes the sync with the greatest
  ``upstream <= c`` and answers its ``downstream``: a consumer resuming there sees every record
  from ``c`` on (and the copies of ``upstream .. c-1`` again: duplicates, never a gap).  Without a
  sync at or below ``c`` there is no safe answer (None), and nothing is committed.

The store keeps a bounded number of syncs per partition, dropping the oldest, so translation of
an offset committed long ago falls back to the oldest kept sync or to None (never to a gap).
"""

from __future__ import annotations

from bisect import bisect_right

SYNCS_PER_PARTITION = 256  # kept per partition; the oldest go first (old commits translate coarser)


class OffsetSyncs:
    """Offset syncs per (topic, partition), in upstream order."""

    def __init__(self, per_partition: int = SYNCS_PER_PARTITION) -> None:
        if per_partition < 1:
            raise ValueError("per_partition must be at least 1")
        self.per_partition = per_partition
        self._up: dict[tuple[str, int], list[int]] = {}
        self._down: dict[tuple[str, int], list[int]] = {}

    def record(self, tp: tuple[str, int], upstream: int, downstream: int) -> None:
        """Add a sync.  Upstream offsets only grow within one run of the mirror; a sync at the same
        upstream offset keeps the greater target offset (both are true, the greater is tighter);
        one that goes back (not expected) drops the syncs after it, which is always safe."""
        ups = self._up.setdefault(tp, [])
        downs = self._down.setdefault(tp, [])
        if ups and upstream == ups[-1]:
            downs[-1] = max(downs[-1], downstream)
            return
        if ups and upstream < ups[-1]:
            cut = bisect_right(ups, upstream) - 1
            if cut >= 0 and ups[cut] == upstream:
                downstream = max(downstream, downs[cut])
            cut = cut if cut >= 0 and ups[cut] == upstream else cut + 1
            del ups[cut:], downs[cut:]
        ups.append(upstream)
        downs.append(downstream)
        if len(ups) > self.per_partition:
            del ups[0], downs[0]

    def translate(self, tp: tuple[str, int], committed: int) -> int | None:
        """The target offset from which a group that committed ``committed`` upstream resumes
        without skipping a record, or None when no sync covers it."""
        ups = self._up.get(tp)
        if not ups:
            return None
        i = bisect_right(ups, committed) - 1
        if i < 0:
            return None
        return self._down[tp][i]

    def syncs(self, tp: tuple[str, int]) -> list[tuple[int, int]]:
        return list(zip(self._up.get(tp, []), self._down.get(tp, [])))
