"""The timing and size settings of data replication, in one commented block (STYLE rule 19).

Why these defaults:

- ``replica_lag_ms`` = 10,000: a follower not caught up for this long leaves the ISR.  A dead
  broker does not wait for it: its session expires (``broker_session_timeout_ms``, 1,500) and the
  controller fences it and drops it from every ISR.  So this only covers a follower that is alive
  but not keeping up (a slow disk, a long pause of a 2-core box shared with others), and there an
  eager value costs more than it saves: every shrink and re-expansion is a controller write, and
  while the ISR is below ``min_insync_replicas`` every ``acks=all`` produce fails.  10 s is
  Kafka's ``replica.lag.time.max.ms`` before KIP-537 raised it to 30 s; we keep the shorter one
  because an ``acks=all`` producer behind a stuck-but-alive follower waits up to this long.
- ``replica_fetch_idle_ms`` = 500: a follower that heard nothing (no push, no fetch reply) for
  this long fetches anyway.  This repairs a lost last PUB frame when no later push exposes the
  gap, and it keeps the follower "caught up" in the leader's eyes during quiet periods; it must
  stay well below ``replica_lag_ms`` (checked).
- ``replica_fetch_timeout_ms`` = 2,000: a fetch without a reply is sent again (one outstanding
  fetch per partition; a reply to the old one is recognised by its echoed offset and dropped).
- ``replica_fetch_max_bytes`` = 8 MiB: a reply carries at least one whole batch and at most this
  much beyond it, so catching up after a restart moves in bounded steps.
- ``isr_retry_ms`` = 1,000: an ISR proposal the controller has not answered is made again.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["ReplicationConfig"]


@dataclass(frozen=True)
class ReplicationConfig:
    replica_lag_ms: int = 10_000
    replica_fetch_idle_ms: int = 500
    replica_fetch_timeout_ms: int = 2_000
    replica_fetch_max_bytes: int = 8 << 20
    isr_retry_ms: int = 1_000

    def __post_init__(self) -> None:
        for name in ("replica_lag_ms", "replica_fetch_idle_ms", "replica_fetch_timeout_ms",
                     "replica_fetch_max_bytes", "isr_retry_ms"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0, not {getattr(self, name)}")
        if self.replica_fetch_idle_ms >= self.replica_lag_ms:
            raise ValueError(f"replica_fetch_idle_ms ({self.replica_fetch_idle_ms}) must be below "
                             f"replica_lag_ms ({self.replica_lag_ms}), or idle followers leave the ISR")
