"""The stand-in Exchange itself (fast, no service): a snapshot is frozen while the writer
keeps changing pages, fingerprints move only with changed blocks, recovery replays."""

from __future__ import annotations

import shutil

from app.agent import standin


def test_a_snapshot_stays_frozen_while_the_writer_flushes_pages(tmp_path):
    root = standin.create_server(tmp_path / "S", "S")
    store = standin.create_database(root, "DB1", pages=300, page_size=8192, log_size=64 * 1024)
    writer = standin.Writer(store, seed=1, flush_every=50)
    writer.transactions(400)
    ex = standin.StandInExchange(root)
    snap = ex.snapshot("DB1", logs_after=None)
    frozen = store.edb.read_bytes()  # nothing flushed since the freeze yet
    first = ex.check(snap, 64 * 1024)["block_fingerprints"]
    writer.transactions(2000)  # many flushes: copy-on-write preserves the old pages
    assert store.edb.read_bytes() != frozen
    with ex.open_file(snap, "DB1.edb") as fh:
        assert fh.read() == frozen
    assert ex.check(snap, 64 * 1024)["block_fingerprints"] == first
    ex.release(snap)

    later = ex.snapshot("DB1", logs_after=None)
    changed = ex.check(later, 64 * 1024)["block_fingerprints"]
    assert len(changed) == len(first) and changed != first
    ex.release(later)


def test_soft_recovery_replays_the_logs_into_the_database(tmp_path):
    root = standin.create_server(tmp_path / "S", "S")
    store = standin.create_database(root, "DB1", pages=200, page_size=8192, log_size=64 * 1024)
    seed = tmp_path / "seed.edb"
    shutil.copyfile(store.edb, seed)
    writer = standin.Writer(store, seed=2, flush_every=10**9)  # nothing flushed: logs only
    writer.transactions(800)
    state = store.state()
    standin.roll(store, state)
    store.save_state(state)
    live = writer.dirty  # what the database would hold after a flush
    target = tmp_path / "restored"
    (target / "logs").mkdir(parents=True)
    shutil.copyfile(seed, target / "DB1.edb")
    for gen in store.generations()[:-1]:
        shutil.copyfile(store.logs / standin.log_name(gen), target / "logs" / standin.log_name(gen))
    shutil.copyfile(store.chk, target / "E00.chk")
    result = standin.soft_recovery(target, "DB1", None)
    assert result["state"] == "clean" and result["records_applied"] == 800
    restored = (target / "DB1.edb").read_bytes()
    for number, page in live.items():
        assert restored[number * 8192 : (number + 1) * 8192] == bytes(page)
