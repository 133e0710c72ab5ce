import os

import pytest
from tracker_client import journal as journal_module
from tracker_client.journal import MAGIC, Journal, JournalLocked, list_journal_dirs
from tracker_client.records import METRICS, Record, new_key


def rec(seq, kind=METRICS, body=b"{}", blobs=None, count=1):
    return Record(kind, seq, new_key(), body, list(blobs or []), count)


def test_append_read_roundtrip_with_blobs(tmp_path):
    j = Journal(tmp_path / "run", meta={"url": "http://x", "local_id": "local-1"})
    original = rec(0, "images", b'[{"key":"a"}]', [b"\x89PNG" + bytes(range(256)), b""], 2)
    j.append(original)
    assert j.read(0) == original
    assert j.pending_count == 1
    assert j.meta["local_id"] == "local-1"
    j.close(remove_if_empty=False)


def test_every_append_is_fsynced(tmp_path, monkeypatch):
    calls = []
    real = os.fsync
    monkeypatch.setattr(journal_module.os, "fsync", lambda fd: (calls.append(fd), real(fd)))
    j = Journal(tmp_path / "run")
    before = len(calls)
    for seq in range(3):
        j.append(rec(seq))
    assert len(calls) - before == 3
    j.close(remove_if_empty=False)


def test_replay_in_seq_order_and_acked_records_not_replayed_after_restart(tmp_path):
    d = tmp_path / "run"
    j = Journal(d)
    # file order differs from seq order (a batch in flight is journaled after later ones)
    for seq in (2, 3, 0, 1, 4):
        j.append(rec(seq, body=f'{{"n":{seq}}}'.encode()))
    assert [r.seq for r in j] == [0, 1, 2, 3, 4]
    assert j.ack(0) and j.ack(2)
    assert not j.ack(2)  # second ack of the same record is a no-op
    keys = {r.seq: r.key for r in j}
    j.close()
    assert d.exists()  # pending records keep the journal

    # "process restart": a fresh Journal object over the same directory
    j2 = Journal(d)
    replay = list(j2)
    assert [r.seq for r in replay] == [1, 3, 4]
    assert {r.seq: r.key for r in replay} == {s: keys[s] for s in (1, 3, 4)}  # same keys
    assert [r.body for r in replay] == [b'{"n":1}', b'{"n":3}', b'{"n":4}']
    assert j2.next_seq == 5
    for r in replay:
        j2.ack(r.seq)
    assert j2.pending_count == 0
    assert j2.close() is True
    assert not d.exists()


def test_torn_tail_is_ignored_and_truncated(tmp_path):
    d = tmp_path / "run"
    j = Journal(d)
    j.append(rec(0, body=b"a" * 100))
    j.append(rec(1, body=b"b" * 100))
    j.close(remove_if_empty=False)
    path = d / "records.log"
    size = path.stat().st_size
    with open(path, "r+b") as fh:  # the process died in the middle of the second record
        fh.truncate(size - 37)
    j2 = Journal(d)
    assert [r.seq for r in j2] == [0]
    # new appends land after the last good record, not behind garbage
    j2.append(rec(5, body=b"c"))
    j2.close(remove_if_empty=False)
    j3 = Journal(d)
    assert [r.seq for r in j3] == [0, 5]
    j3.close(remove_if_empty=False)


def test_corrupted_record_detected_by_crc(tmp_path):
    d = tmp_path / "run"
    j = Journal(d)
    j.append(rec(0, body=b"x" * 50))
    j.append(rec(1, body=b"y" * 50))
    j.close(remove_if_empty=False)
    path = d / "records.log"
    data = bytearray(path.read_bytes())
    data[-10] ^= 0xFF  # flip a bit inside the last record's payload
    path.write_bytes(bytes(data))
    j2 = Journal(d)
    assert [r.seq for r in j2] == [0]
    j2.close(remove_if_empty=False)


def test_garbage_length_is_damage_not_an_allocation(tmp_path):
    d = tmp_path / "run"
    Journal(d).close(remove_if_empty=False)
    with open(d / "records.log", "ab") as fh:
        fh.write(b"\xff\xff\xff\x7f" + b"\x00" * 4 + b"junk")
    j = Journal(d)
    assert j.pending_count == 0
    j.close(remove_if_empty=False)
    assert (d / "records.log").read_bytes() == MAGIC


def test_torn_ack_is_ignored(tmp_path):
    d = tmp_path / "run"
    j = Journal(d)
    j.append(rec(0))
    j.append(rec(1))
    j.ack(0)
    j.close()
    with open(d / "acks.log", "ab") as fh:
        fh.write(b"\x01\x00\x00")  # half an ack for seq 1
    j2 = Journal(d)
    assert [r.seq for r in j2] == [1]
    j2.close(remove_if_empty=False)


def test_second_owner_is_refused(tmp_path):
    d = tmp_path / "run"
    j = Journal(d)
    with pytest.raises(JournalLocked):
        Journal(d)
    j.close(remove_if_empty=False)
    Journal(d).close()


def test_compaction_keeps_sequence_numbers_increasing(tmp_path):
    d = tmp_path / "run"
    j = Journal(d)
    j.append(rec(0))
    j.append(rec(1))
    j.ack(0)
    j.ack(1)  # everything delivered: files are reset
    assert (d / "records.log").stat().st_size == len(MAGIC)
    j.close(remove_if_empty=False)
    j2 = Journal(d)
    assert j2.next_seq == 2
    j2.close()


def test_list_journal_dirs(tmp_path):
    root = tmp_path / "journal"
    Journal(root / "host_1" / "local-a").close(remove_if_empty=False)
    Journal(root / "host_2" / "17").close(remove_if_empty=False)
    assert [p.name for p in list_journal_dirs(root)] == ["local-a", "17"]
