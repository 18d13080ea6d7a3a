"""The failover measurement of tools/bench_cluster.py, without processes: how an ack log is read."""

from __future__ import annotations

import json

from tools.bench.cluster_fabric import out_of_send_order
from tools.bench.failover_load import AckTail, ack_record


def write(path, rows):
    path.write_text("".join(ack_record("t", p, o, k, b"v%d" % o, sent, acked) for p, o, k, sent, acked in rows))


def test_the_failover_time_is_the_first_ack_of_a_record_sent_after_the_kill(tmp_path):
    log = tmp_path / "acks.jsonl"
    write(log, [(0, 10, b"a", 1.0, 1.2),    # sent and acknowledged before the kill at 5.0
                (0, 11, b"a", 4.9, 5.01),   # sent before, acknowledged after: the old leader's reply
                (1, 3, b"b", 5.5, 6.0),     # another partition
                (0, 12, b"a", 5.2, 7.3),    # sent after the kill: only the new leader can ack it
                (0, 13, b"a", 5.1, 7.25)])  # (acknowledged first of those)
    tail = AckTail(log)
    tail.poll()
    assert tail.total == 5
    assert tail.first_ack_sent_after(0, 5.0) == 7.25
    assert tail.first_ack_sent_after(1, 5.0) == 6.0
    assert tail.first_ack_sent_after(2, 5.0) is None


def test_the_tail_reads_only_whole_lines_and_resumes_where_it_stopped(tmp_path):
    log = tmp_path / "acks.jsonl"
    line = ack_record("t", 0, 1, b"k", b"v", 1.0, 2.0)
    log.write_text(line + line[:20])  # the writer is in the middle of its second line
    tail = AckTail(log)
    tail.poll()
    assert tail.total == 1
    with open(log, "a") as f:
        f.write(line[20:])
    tail.poll()
    assert tail.total == 2 and json.loads(line)["acked"] == 2.0


def test_out_of_send_order_tells_a_log_reorder_from_acknowledgements_arriving_out_of_order(tmp_path):
    log = tmp_path / "acks.jsonl"
    # Acknowledged out of order, but the offsets follow the send order: not a reorder of the log.
    write(log, [(0, 5, b"k", 1.1, 2.0), (0, 4, b"k", 1.0, 2.1)])
    assert out_of_send_order(log) == []
    # Sent first, written later: the producer's order promise broken.
    write(log, [(0, 5, b"k", 1.0, 2.0), (0, 4, b"k", 1.1, 2.1)])
    found = out_of_send_order(log)
    assert len(found) == 1 and found[0]["sent_first"] == [1.0, 5] and found[0]["sent_later"] == [1.1, 4]
