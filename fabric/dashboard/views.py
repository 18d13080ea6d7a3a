"""The dashboard's screens, as rich renderables built from the ``Model`` and the ``NavState``.

Only layout lives here: every number comes from ``model.py``.  Colour carries health (green ok,
yellow warning, red bad or down) so a glance is enough; the selected row is reversed.
"""

from __future__ import annotations

from typing import Any, Sequence

from rich.console import Group as RichGroup, RenderableType
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from .model import Health, Model, sparkline
from .state import HELP, TABS, NavState, View

COLOR = {Health.OK: "green", Health.WARN: "yellow", Health.BAD: "red", Health.DOWN: "red"}
TAB_TITLES = {View.OVERVIEW: "Overview", View.TOPICS: "Topics", View.GROUPS: "Groups",
              View.CONNECT: "Connect", View.CLUSTER: "Cluster"}
SPARK = 40


def rate(x: float) -> str:
    if x >= 1_000_000:
        return f"{x / 1_000_000:.2f}M/s"
    if x >= 10_000:
        return f"{x / 1000:.1f}k/s"
    return f"{x:,.0f}/s" if x >= 10 or x == 0 else f"{x:.1f}/s"


def size(n: float, per_second: bool = False) -> str:
    suffix = "/s" if per_second else ""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}{suffix}" if unit == "B" else f"{n:.1f} {unit}{suffix}"
        n /= 1024
    return f"{n}{suffix}"


def duration_ms(ms: int) -> str:
    if ms < 1000:
        return f"{ms} ms"
    s = ms // 1000
    if s < 120:
        return f"{ms / 1000:.1f} s"
    if s < 7200:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{(s % 3600) // 60:02d}m"


def micros(us: int) -> str:
    return f"{us} µs" if us < 1000 else f"{us / 1000:.1f} ms" if us < 1_000_000 else f"{us / 1e6:.2f} s"


def _health(h: Health, label: str | None = None) -> Text:
    return Text(f"● {label or h.value.upper()}", style=f"bold {COLOR[h]}")


def _table(title: str, columns: Sequence[tuple[str, str]]) -> Table:
    t = Table(title=title, title_justify="left", title_style="bold", expand=True, header_style="bold cyan",
              pad_edge=False, box=None)
    for name, justify in columns:
        t.add_column(name, justify=justify, no_wrap=True)  # type: ignore[arg-type]
    return t


def header(model: Model, address: str, nav: NavState) -> RenderableType:
    stats = model.latest
    h = model.health
    line = Text()
    line.append("Fabric ", style="bold magenta")
    line.append(f"· broker {address} ")
    if stats is not None:
        b = stats["broker"]
        line.append(f"· node {b['node_id']} · v{b['version']} · up {duration_ms(b['uptime_ms'])} ")
    line.append(" ")
    line.append_text(_health(h, "DOWN: reconnecting") if h is Health.DOWN else _health(h))
    line.no_wrap, line.overflow = True, "ellipsis"
    lines: list[RenderableType] = [line]
    if h is Health.DOWN and model.last_error:
        lines.append(Text(f"  last error: {model.last_error}", style="red", no_wrap=True, overflow="ellipsis"))
    tabs = Text()
    for i, view in enumerate(TABS, 1):
        current = nav.view is view or (nav.view in (View.PARTITIONS, View.GROUP) and
                                       {View.PARTITIONS: View.TOPICS, View.GROUP: View.GROUPS}[nav.view] is view)
        tabs.append(f" {i} {TAB_TITLES[view]} ", style="reverse bold" if current else "dim")
        tabs.append(" ")
    return RichGroup(*lines, tabs)


def footer(nav: NavState) -> Text:
    if nav.typing:
        return Text(f"filter: {nav.filter}▏  (Enter keep · Esc clear)", style="bold yellow")
    t = Text("q quit · ? help · 1-5 views · ↑↓ select · Enter open · Esc back · / filter · i internal", style="dim",
             no_wrap=True, overflow="ellipsis")
    if nav.filter:
        t.append(f"   filter: {nav.filter!r}", style="yellow")
    return t


def overview(model: Model) -> RenderableType:
    tp = Table.grid(padding=(0, 2))
    tp.add_column(style="bold")
    tp.add_column(justify="right")
    tp.add_column()
    for label, key, fmt in (("in", "records_in", rate), ("out", "records_out", rate)):
        tp.add_row(f"records {label}", fmt(model.total_rate(key)),
                   Text(sparkline(model.total_series(key), SPARK), style="cyan"))
    for label, key in (("in", "bytes_in"), ("out", "bytes_out")):
        tp.add_row(f"bytes {label}", size(model.total_rate(key), True),
                   Text(sparkline(model.total_series(key), SPARK), style="blue"))
    stats = model.latest or {}
    brokers = _table("Brokers", [("node", "right"), ("role", "left"), ("health", "left"), ("connections", "right"),
                                 ("parked fetches", "right"), ("errors", "right"), ("fsync p99", "right")])
    if stats:
        b = stats["broker"]
        fs = stats["fsync"]["latency_us"]
        brokers.add_row(str(b["node_id"]), "broker + controller (single node)", _health(model.health),
                        str(stats["connections"]["open"]), str(stats["parked"]["fetches"]),
                        rate(model.error_rate()), micros(fs["p99"]) if fs["count"] else "-")
    else:
        brokers.add_row("-", "-", _health(Health.DOWN), "-", "-", "-", "-")
    topics = sorted(model.topics(), key=lambda t: -(t.records_in_rate + t.records_out_rate))[:8]
    tt = _table("Busiest topics", [("topic", "left"), ("in", "right"), ("out", "right"), ("size", "right"),
                                   ("group lag", "right")])
    for t in topics:
        tt.add_row(t.name, rate(t.records_in_rate), rate(t.records_out_rate), size(t.size_bytes), f"{t.lag:,}")
    gt = _group_table(model, None, limit=8)
    ops = _table("Requests", [("operation", "left"), ("rate", "right"), ("p50", "right"), ("p99", "right"),
                              ("p99.9", "right")])
    for o in sorted(model.operations(), key=lambda o: -o.rate)[:8]:
        ops.add_row(o.op, rate(o.rate), micros(o.p50_us), micros(o.p99_us), micros(o.p999_us))
    return RichGroup(Panel(tp, title="Throughput", title_align="left"), brokers, Text(), tt, Text(), gt, Text(), ops)


def topics_view(model: Model, nav: NavState) -> tuple[RenderableType, list[str]]:
    rows = model.topics(internal=nav.show_internal, name_filter=nav.filter)
    t = _table(f"Topics ({len(rows)})", [("topic", "left"), ("partitions", "right"), ("in rec", "right"),
                                        ("out rec", "right"), ("in bytes", "right"), ("out bytes", "right"),
                                        ("size", "right"), ("max group lag", "right"), ("health", "left")])
    for i, r in enumerate(rows):
        t.add_row(r.name, str(r.partitions), rate(r.records_in_rate), rate(r.records_out_rate),
                  size(r.bytes_in_rate, True), size(r.bytes_out_rate, True), size(r.size_bytes), f"{r.lag:,}",
                  _health(r.health), style="reverse" if i == nav.selected else None)
    if not rows:
        t.add_row(Text("no topics" + (f" matching {nav.filter!r}" if nav.filter else ""), style="dim"))
    return t, [r.name for r in rows]


def partitions_view(model: Model, nav: NavState) -> tuple[RenderableType, list[str]]:
    topic = nav.topic or ""
    rows = model.partitions(topic)
    t = _table(f"Topic {topic}: partitions ({len(rows)})  [Esc: back]",
               [("partition", "right"), ("leader", "right"), ("replicas", "left"), ("ISR", "left"),
                ("log start", "right"), ("log end", "right"), ("high watermark", "right"), ("size", "right"),
                ("segments", "right"), ("in", "right"), ("out", "right"), ("health", "left")])
    for i, r in enumerate(rows):
        t.add_row(str(r.partition), str(r.leader), ",".join(map(str, r.replicas)), ",".join(map(str, r.isr)),
                  f"{r.log_start_offset:,}", f"{r.log_end_offset:,}", f"{r.high_watermark:,}", size(r.size_bytes),
                  str(r.segments), rate(r.records_in_rate), rate(r.records_out_rate), _health(r.health),
                  style="reverse" if i == nav.selected else None)
    if not rows:
        t.add_row(Text(f"topic {topic!r} is not on this broker (deleted?)", style="dim"))
    return t, [str(r.partition) for r in rows]


def _group_table(model: Model, nav: NavState | None, limit: int | None = None) -> Table:
    rows = model.groups(nav.filter if nav else "")
    if limit is not None:
        rows = sorted(rows, key=lambda g: -g.lag)[:limit]
    t = _table(f"Consumer groups ({len(rows)})", [("group", "left"), ("state", "left"), ("members", "right"),
                                                 ("lag", "right"), ("lag time", "right"), ("consumed", "right"),
                                                 ("lag trend", "left"), ("health", "left")])
    for i, g in enumerate(rows):
        t.add_row(g.group_id, g.state, str(g.members), f"{g.lag:,}", duration_ms(g.lag_ms), rate(g.consume_rate),
                  Text(sparkline(g.lag_trend, 20), style=COLOR[g.health]), _health(g.health),
                  style="reverse" if nav is not None and i == nav.selected else None)
    if not rows:
        t.add_row(Text("no consumer groups", style="dim"))
    return t


def groups_view(model: Model, nav: NavState) -> tuple[RenderableType, list[str]]:
    return _group_table(model, nav), [g.group_id for g in model.groups(nav.filter)]


def group_view(model: Model, nav: NavState) -> tuple[RenderableType, list[str]]:
    g = model.group(nav.group or "")
    if g is None:
        return Text(f"group {nav.group!r} is gone  [Esc: back]", style="dim"), []
    head = Text()
    head.append(f"Group {g.group_id}", style="bold")
    head.append(f"  state {g.state} · generation {g.generation} · {g.members} members · "
                f"assignor {g.protocol or '-'} · lag {g.lag:,} records ({duration_ms(g.lag_ms)})  ")
    head.append_text(_health(g.health))
    t = _table("Committed offsets and lag per partition  [Esc: back]",
               [("topic", "left"), ("partition", "right"), ("committed", "right"), ("log end", "right"),
                ("lag", "right"), ("lag time", "right"), ("trend", "left")])
    for i, p in enumerate(g.partitions):
        t.add_row(p.topic, str(p.partition), f"{p.committed_offset:,}", f"{p.log_end_offset:,}", f"{p.lag:,}",
                  duration_ms(p.lag_ms), Text(sparkline(p.trend, 20), style="yellow" if p.lag else "green"),
                  style="reverse" if i == nav.selected else None)
    return RichGroup(head, Text(), t), [f"{p.topic}/{p.partition}" for p in g.partitions]


def connect_view(connectors: list[dict[str, Any]] | None) -> RenderableType:
    if not connectors:
        return Panel(Text("No Connect worker has reported to this cluster: nothing to show.\n"
                          "Start one with `fabric connect run CONFIG.yaml`; its connectors and tasks appear here.",
                          style="dim"), title="Connect", title_align="left")
    t = _table("Connectors", [("connector", "left"), ("state", "left"), ("tasks", "left"), ("worker", "left"),
                              ("error", "left")])
    for c in connectors:
        state = c.get("state", "?")
        style = {"RUNNING": "green", "PAUSED": "yellow", "FAILED": "red"}.get(state, "white")
        t.add_row(c.get("name", "?"), Text(state, style=style), c.get("tasks", ""), c.get("worker", ""),
                  Text(c.get("error", "") or "", style="red"))
    return t


def cluster_view(model: Model) -> RenderableType:
    stats = model.latest or {}
    counts = model.partition_counts()
    t = _table("Brokers and controllers", [("node", "right"), ("controller", "left"), ("broker", "left"),
                                           ("partitions led", "right")])
    if stats:
        t.add_row(str(stats["broker"]["node_id"]), "itself (single node: no quorum)", _health(model.health),
                  str(counts["total"]))
    note = Text()
    if stats.get("cluster") is None:
        note.append("This is a single-node broker: it is its own controller and there is no replication, "
                    "so there is nothing to show for Raft roles, terms, under-replicated or offline partitions.",
                    style="dim")
    else:
        c = stats["cluster"]
        note.append(f"controller term {c.get('term')} · under-replicated {counts['under_replicated']} · "
                    f"offline {counts['offline']}")
    return RichGroup(t, Text(), note)


def help_view() -> RenderableType:
    t = Table(title="Keys", box=None, show_header=False)
    t.add_column(style="bold yellow")
    t.add_column()
    for key, what in HELP:
        t.add_row(key, what)
    return Panel(t, title="? help", title_align="left", border_style="yellow")


def body(model: Model, nav: NavState, connectors: list[dict[str, Any]] | None) -> tuple[RenderableType, list[str]]:
    """The current view and the names of its rows (what Enter would open)."""
    if nav.show_help:
        return help_view(), []
    if nav.view is View.OVERVIEW:
        return overview(model), []
    if nav.view is View.TOPICS:
        return topics_view(model, nav)
    if nav.view is View.PARTITIONS:
        return partitions_view(model, nav)
    if nav.view is View.GROUPS:
        return groups_view(model, nav)
    if nav.view is View.GROUP:
        return group_view(model, nav)
    if nav.view is View.CONNECT:
        return connect_view(connectors), []
    return cluster_view(model), []


def screen(model: Model, nav: NavState, address: str,
           connectors: list[dict[str, Any]] | None) -> tuple[RenderableType, list[str]]:
    view, rows = body(model, nav, connectors)
    return RichGroup(header(model, address, nav), Text(), view, Text(), footer(nav)), rows
