"""The dashboard's navigation: which view, which row, which filter; keys in, new state out.

A table of rules, like the other state machines of Fabric (no terminal, no clock):

Rule 1: views are Overview, Topics, Groups, Connect, Cluster (keys 1-5, Tab / Shift-Tab cycle);
        Partitions (of one topic) and Group (one group's partitions) are opened from a list.
Rule 2: Up/Down (or k/j) move the selection in a list view; it is clamped to the rows there are.
Rule 3: Enter on Topics opens that topic's Partitions; on Groups opens that Group.
        Esc or Backspace goes back to the list it came from.
Rule 4: "/" starts typing a filter (name contains, case-insensitive); Enter keeps it, Esc clears
        it; while typing, every other key is text.
Rule 5: "i" shows or hides internal topics (``__…``).  "?" shows or hides the key help.
Rule 6: "q" (or Ctrl-C) quits, from anywhere but the filter prompt.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import Enum


class View(Enum):
    OVERVIEW = "overview"
    TOPICS = "topics"
    GROUPS = "groups"
    CONNECT = "connect"
    CLUSTER = "cluster"
    PARTITIONS = "partitions"
    GROUP = "group"


TABS = (View.OVERVIEW, View.TOPICS, View.GROUPS, View.CONNECT, View.CLUSTER)
PARENT = {View.PARTITIONS: View.TOPICS, View.GROUP: View.GROUPS}

# Key names as ``keys.py`` reads them.
UP, DOWN, ENTER, ESC, BACKSPACE, TAB, BACKTAB, CTRL_C = "up", "down", "enter", "esc", "backspace", "tab", "backtab", "ctrl-c"

HELP = (
    ("1-5, Tab", "switch view: overview, topics, groups, connect, cluster"),
    ("↑ ↓  k j", "move the selection"),
    ("Enter", "open the selected topic (partitions) or group (lag per partition)"),
    ("Esc", "back to the list"),
    ("/", "filter by name (Enter keeps it, Esc clears it)"),
    ("i", "show or hide internal topics"),
    ("?", "show or hide this help"),
    ("q", "quit"),
)


@dataclass(frozen=True)
class NavState:
    view: View = View.OVERVIEW
    selected: int = 0
    filter: str = ""
    typing: bool = False
    show_internal: bool = False
    show_help: bool = False
    topic: str | None = None  # opened in PARTITIONS
    group: str | None = None  # opened in GROUP
    quit: bool = False


def handle_key(state: NavState, key: str, rows: list[str]) -> NavState:
    """The state after ``key``; ``rows`` are the names listed in the current view (to open one)."""
    if state.typing:  # rule 4
        if key == ENTER:
            return replace(state, typing=False, selected=0)
        if key == ESC:
            return replace(state, typing=False, filter="", selected=0)
        if key == BACKSPACE:
            return replace(state, filter=state.filter[:-1], selected=0)
        if key == CTRL_C:
            return replace(state, quit=True)
        if len(key) == 1 and key.isprintable():
            return replace(state, filter=state.filter + key, selected=0)
        return state
    if key in ("q", CTRL_C):  # rule 6
        return replace(state, quit=True)
    if key == "?":
        return replace(state, show_help=not state.show_help)
    if key == ESC and state.show_help:
        return replace(state, show_help=False)
    if len(key) == 1 and key in "12345":  # rule 1
        return replace(state, view=TABS[int(key) - 1], selected=0, show_help=False)
    if key in (TAB, BACKTAB):
        current = TABS.index(PARENT.get(state.view, state.view))
        step = 1 if key == TAB else -1
        return replace(state, view=TABS[(current + step) % len(TABS)], selected=0)
    if key in (UP, "k"):  # rule 2
        return replace(state, selected=max(0, state.selected - 1))
    if key in (DOWN, "j"):
        return replace(state, selected=max(0, min(len(rows) - 1, state.selected + 1)))
    if key == ENTER and rows:  # rule 3
        name = rows[min(state.selected, len(rows) - 1)]
        if state.view is View.TOPICS:
            return replace(state, view=View.PARTITIONS, topic=name, selected=0)
        if state.view is View.GROUPS:
            return replace(state, view=View.GROUP, group=name, selected=0)
        return state
    if key in (ESC, BACKSPACE) and state.view in PARENT:
        return replace(state, view=PARENT[state.view], selected=0)
    if key == "/":
        return replace(state, typing=True)
    if key == "i":  # rule 5
        return replace(state, show_internal=not state.show_internal, selected=0)
    return state
