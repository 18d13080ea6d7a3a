"""What a clustered broker knows at start about how its previous incarnations ended: whether its
partition logs still hold everything they wrote (KIP-966's unclean-shutdown detection).

Why: a follower acknowledges a batch once it is written to the OS, not fsynced (replication, not
fsync, is what ``acks=all`` promises, as in Kafka).  A power loss or an OS crash loses that
unflushed tail; if the controller still counted the broker in a partition's ISR, it could elect it
leader with acknowledged records missing, and the other replicas would truncate them to match
(cluster simulation seed 5430).  So the broker tells the controller, at registration, since which
incarnation its logs hold every write (``register``'s ``intact_since``, SPEC 13.5), and the
controller takes it out of every ISR when that does not cover the incarnation it had registered
(``ControllerLogic`` rule 7).

Rules (files in ``<data_dir>/meta/``, each written with ``write_durably``):
1. ``clean-shutdown`` holds the incarnation that wrote it; it is written last at a clean
   shutdown (every log flushed and closed) and removed at start, before this incarnation registers,
   so it can only ever describe the process that ran just before.
2. ``last-start`` holds ``<incarnation> <boot id> <intact since>`` of the process that ran last,
   written at its start.  The boot id is the kernel's (``/proc/sys/kernel/random/boot_id``): it
   changes at every boot.
3. The previous incarnation's writes are intact when its ``clean-shutdown`` marker is there, or
   when it crashed but the machine did not reboot since it started (same boot id): the kernel's
   page cache, which held its every write, outlived the process.  Then this incarnation's logs hold
   every write since the previous one's ``intact since`` (a chain of crashes, say, of processes
   killed before they could register, keeps it).  Otherwise (a reboot: power loss or OS crash; no
   boot id known; no record at all) nothing earlier is vouched for: ``intact_since`` is None, and
   this incarnation's own record says it holds every write since itself.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from ..log.files import fsync_dir, write_durably

log = logging.getLogger("fabric.broker.restart")

__all__ = ["LastStart", "boot_id", "intact_since", "mark_clean_shutdown", "next_incarnation", "restart_intact_since"]

BOOT_ID_PATH = Path("/proc/sys/kernel/random/boot_id")
CLEAN_SHUTDOWN = "clean-shutdown"
LAST_START = "last-start"
LastStart = tuple[int, str | None, int]  # (incarnation, boot id or None, intact since)


def boot_id(path: Path = BOOT_ID_PATH) -> str | None:
    """The running kernel's boot id, None where the OS does not say (then every crash counts as
    unclean: rule 3)."""
    try:
        value = path.read_text().strip()
    except OSError:
        return None
    return value or None


def intact_since(marker: int | None, last_start: LastStart | None, current_boot: str | None) -> int | None:
    """Rule 3, pure: the oldest incarnation since which the logs hold every write, or None.
    ``marker``: the ``clean-shutdown`` marker's incarnation (None: none); ``last_start``: the
    previous start's record (None: none)."""
    if last_start is None:
        return None
    incarnation, boot, since = last_start
    if marker is not None and marker == incarnation:
        return since
    if boot is not None and current_boot is not None and boot == current_boot:
        return since  # it crashed, the machine did not: the page cache kept its writes
    return None


def _read_int(path: Path) -> int | None:
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _read_last_start(path: Path) -> LastStart | None:
    try:
        parts = path.read_text().split()
        incarnation = int(parts[0])
        return incarnation, (parts[1] if parts[1] != "-" else None), int(parts[2])
    except (OSError, ValueError, IndexError):
        return None


def restart_intact_since(data_dir: Path, incarnation: int, current_boot: str | None = None) -> int | None:
    """At start, before registering as ``incarnation``: rule 3's answer (what ``register``
    sends); then the marker is removed and this start recorded (rules 1, 2), both durably."""
    meta = Path(data_dir) / "meta"
    meta.mkdir(parents=True, exist_ok=True)
    current_boot = boot_id() if current_boot is None else current_boot
    marker_path = meta / CLEAN_SHUTDOWN
    marker = _read_int(marker_path)
    last = _read_last_start(meta / LAST_START)
    since = intact_since(marker, last, current_boot)
    if marker_path.exists():
        marker_path.unlink()
        fsync_dir(meta)
    record = f"{incarnation} {current_boot or '-'} {incarnation if since is None else since}\n"
    write_durably(meta / LAST_START, record.encode())
    if last is not None and since is None:
        log.warning("incarnation %d did not shut down cleanly and the machine restarted since: its unflushed "
                    "writes may be lost; the controller takes this broker out of every ISR until it catches up",
                    last[0])
    return since


def mark_clean_shutdown(data_dir: Path, incarnation: int) -> None:
    """Rule 1: every log is flushed and closed; the next start may trust them."""
    write_durably(Path(data_dir) / "meta" / CLEAN_SHUTDOWN, f"{incarnation}\n".encode())


def next_incarnation(data_dir: Path) -> int:
    """This broker process's incarnation: larger than any earlier one of this data directory (a
    counter kept in ``meta/incarnation``, at least the wall-clock ms), so the controller can tell a
    restarted broker from the one it knew."""
    path = Path(data_dir) / "meta" / "incarnation"
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        last = int(path.read_text().strip() or 0)
    except (OSError, ValueError):
        last = 0
    value = max(last + 1, time.time_ns() // 1_000_000)
    write_durably(path, f"{value}\n".encode())
    return value
