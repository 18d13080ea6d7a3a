"""Datagen source: realistic orders, clicks or sensor readings at a set rate, for demos and tests.

Record ``n`` is a pure function of (``seed``, ``n``): the source offset is ``{"seq": n}``, so a
restarted task continues the same sequence without gaps, and two runs with one seed agree.
``rate`` is records per second (0: as fast as possible); ``max_records`` stops after that many
(0: never).  Keys: orders by ``customer_id``, clicks by ``user_id``, sensors by ``sensor_id``.
"""

from __future__ import annotations

import random
import time
from typing import Any, Callable

from ..api import Field, SourceConnector, SourceRecord, SourceTask

PRODUCTS = ["book", "lamp", "pen", "mug", "chair", "desk", "phone", "cable", "shirt", "shoes"]
PAGES = ["/", "/search", "/cart", "/checkout", "/product", "/account", "/help"]
STATUSES = ["new", "paid", "shipped", "delivered", "cancelled"]
BASE_MS = 1_767_225_600_000  # 2026-01-01T00:00:00Z: generated times are reproducible


def _order(n: int, r: random.Random) -> tuple[Any, dict[str, Any]]:
    qty = r.randint(1, 5)
    price = round(r.uniform(2, 200), 2)
    cust = r.randint(1, 10_000)
    return cust, {"order_id": n + 1, "customer_id": cust, "product": r.choice(PRODUCTS), "quantity": qty,
                  "unit_price": price, "amount": round(qty * price, 2), "status": r.choice(STATUSES),
                  "created_ms": BASE_MS + n * 1000}


def _click(n: int, r: random.Random) -> tuple[Any, dict[str, Any]]:
    user = f"user-{r.randint(1, 5000)}"
    return user, {"click_id": n + 1, "user_id": user, "page": r.choice(PAGES), "ms_on_page": r.randint(50, 60_000),
                  "ts_ms": BASE_MS + n * 100}


def _sensor(n: int, r: random.Random) -> tuple[Any, dict[str, Any]]:
    sensor = f"sensor-{n % 50:02d}"
    return sensor, {"reading_id": n + 1, "sensor_id": sensor, "temperature_c": round(r.gauss(21, 3), 2),
                    "humidity_pct": round(min(100, max(0, r.gauss(45, 10))), 1), "ts_ms": BASE_MS + n * 1000}


KINDS: dict[str, Callable[[int, random.Random], tuple[Any, dict[str, Any]]]] = {
    "orders": _order, "clicks": _click, "sensors": _sensor}


class DatagenTask(SourceTask):
    def start(self, config: dict[str, Any]) -> None:
        self.make = KINDS[config["kind"]]
        self.topic = config["topic"]
        self.rate = config["rate"]
        self.max = config["max_records"]
        self.seed = config["seed"]
        self.batch = config["batch_size"]
        self.partition = {"datagen": config["kind"], "topic": self.topic}
        self.seq = (self.context.offset(self.partition) or {}).get("seq", 0)
        self.t0 = time.monotonic()
        self.seq0 = self.seq

    def poll(self) -> list[SourceRecord]:
        n = self.batch
        if self.max:
            n = min(n, self.max - self.seq)
            if n <= 0:
                time.sleep(0.5)
                return []
        if self.rate:
            due = int((time.monotonic() - self.t0) * self.rate) - (self.seq - self.seq0)
            if due <= 0:
                time.sleep(min(0.5, 1 / self.rate))
                return []
            n = min(n, due)
        out = []
        for s in range(self.seq, self.seq + n):
            key, value = self.make(s, random.Random(self.seed * 1_000_003 + s))
            out.append(SourceRecord(self.partition, {"seq": s + 1}, self.topic, value, key=key))
        self.seq += n
        return out


class DatagenConnector(SourceConnector):
    CONFIG = {
        "kind": Field("str", default="orders", choices=tuple(KINDS)),
        "topic": Field("str", required=True),
        "rate": Field("float", default=100, min=0, doc="records per second; 0: as fast as possible"),
        "max_records": Field("int", default=0, min=0, doc="stop after this many; 0: never"),
        "seed": Field("int", default=1),
        "batch_size": Field("int", default=1000, min=1),
    }
    task_class = DatagenTask
