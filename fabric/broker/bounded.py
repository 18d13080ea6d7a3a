"""A mapping with a ceiling: per-connection state must not grow with every client ever seen."""

from __future__ import annotations

from typing import Any


class BoundedDict(dict):
    """A dict that forgets its oldest entries beyond ``capacity`` (insertion order)."""

    def __init__(self, capacity: int) -> None:
        super().__init__()
        self.capacity = capacity

    def __setitem__(self, key: Any, value: Any) -> None:
        if key not in self and len(self) >= self.capacity:
            del self[next(iter(self))]
        super().__setitem__(key, value)
