"""Restores through the agent: to a point in time (full + incrementals up to a generation,
then the stand-in's soft recovery), compared byte for byte and by replayed state with the
database rebuilt from every log Exchange wrote; over the original with typed confirmation."""

from __future__ import annotations

import filecmp
import shutil
from pathlib import Path

from app.agent import standin
from tests.agent.conftest import agent_policy, make_guest, points_of, run_backup


def _archive(store: standin.Store, archive: Path) -> None:
    """Keep every closed log (truncation removes them from the server)."""
    archive.mkdir(exist_ok=True)
    current = store.state()["generation"]
    for gen in store.generations():
        if gen < current and not (archive / standin.log_name(gen)).exists():
            shutil.copyfile(store.logs / standin.log_name(gen), archive / standin.log_name(gen))


def _expected(tmp: Path, seed_edb: Path, archive: Path, upto: int) -> Path:
    """The database rebuilt from its first state and every log up to ``upto``."""
    exp = tmp / f"expected-{upto}"
    (exp / "logs").mkdir(parents=True)
    shutil.copyfile(seed_edb, exp / "DB1.edb")
    for gen in range(1, upto + 1):
        shutil.copyfile(archive / standin.log_name(gen), exp / "logs" / standin.log_name(gen))
    standin._meta_from_header(exp, "DB1")
    standin.Store(exp).write_checkpoint(1)
    standin.soft_recovery(exp, "DB1", upto)
    return exp


def _restore(service, point_id: int, **params) -> dict:
    job = service.ok(
        "POST",
        "/api/v1/jobs",
        json={"kind": "restore", "restore_point_id": point_id, "params": params},
    )
    return service.wait_job(job["id"])


def test_point_in_time_restore_matches_the_replayed_database(service, tmp_path):
    guest = make_guest(service, tmp_path, "EXCH-R1")
    store = guest.store()
    seed_edb = tmp_path / "seed.edb"
    shutil.copyfile(store.edb, seed_edb)
    archive = tmp_path / "archive"
    writer = standin.Writer(store, seed=3, flush_every=150)
    guest.start_agent()
    try:
        policy = agent_policy(service, guest, "agent-r1")
        for _ in range(3):
            writer.transactions(700)
            _archive(store, archive)
            job = service.wait_job(run_backup(service, guest, policy))
            assert job["state"] == "succeeded", job
            _archive(store, archive)
        full, incr1, incr2 = points_of(service, policy)
        assert [p["details"]["level"] for p in (full, incr1, incr2)] == [
            "full",
            "incremental",
            "incremental",
        ]
        # A generation inside the second incremental: full + incr1 + part of incr2.
        lo, hi = incr2["details"]["log_range"]
        upto = lo + (hi - lo) // 2
        target = tmp_path / "restored"
        job = _restore(
            service, incr2["id"], mode="agent_path", path=str(target), upto_generation=upto
        )
        assert job["state"] == "succeeded", job
        result = job["result"]["details"]
        assert result["chain"] == [full["id"], incr1["id"], incr2["id"]]
        assert result["state"] == "clean"
        expected = _expected(tmp_path, seed_edb, archive, upto)
        assert result["state_digest"] == standin.Store(expected).state_digest()
        assert filecmp.cmp(target / "DB1.edb", expected / "DB1.edb", shallow=False)
        restored_logs = sorted(p.name for p in (target / "logs").iterdir())
        for name in restored_logs[:-1]:  # the last is the new, empty generation
            assert filecmp.cmp(target / "logs" / name, archive / name, shallow=False), name

        # Over the original: refused without the typed name, then done and mounted again.
        r = service.api(
            "POST",
            "/api/v1/jobs",
            json={
                "kind": "restore",
                "restore_point_id": full["id"],
                "params": {"mode": "agent_original"},
            },
        )
        assert r.status_code == 422 and "typing the database's name" in r.text
        job = _restore(service, full["id"], mode="agent_original", confirm="DB1")
        assert job["state"] == "succeeded", job
        end = full["details"]["log_range"][1]
        assert standin.Store(store.path).meta["mounted"]
        assert (
            standin.Store(store.path).state_digest()
            == standin.Store(_expected(tmp_path, seed_edb, archive, end)).state_digest()
        )
    finally:
        guest.stop_agent()
