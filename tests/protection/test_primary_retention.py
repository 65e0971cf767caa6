"""The one primary-retention rule (app/protection/catalog/retention.py), on the catalog alone:
which copies on primary storage go, and what a legal hold or compliance retention keeps.

The two copies this replaced disagreed: the VM-snapshot one kept every snapshot of a held
point, the array one only a held point's last copy. The rule now: a hold or compliance
retention protects the restore point's data, so it keeps a copy on primary storage only while
that copy is all the point has."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import pytest
from sqlalchemy import select

from app.db.models import (
    AuditEvent,
    ExchangeServer,
    LegalHold,
    Policy,
    RestorePoint,
    RestorePointCopy,
)
from app.db.session import Database
from app.db.types import utcnow
from app.domain.protection import Consistency, CopyLocation, ProtectionMethod, RestorePointStatus
from app.protection.catalog.retention import retain_on_primary

SNAP, ARRAY, REPO = CopyLocation.VM_SNAPSHOT, CopyLocation.ARRAY_SNAPSHOT, CopyLocation.REPOSITORY


@pytest.fixture
def db(database_url: str) -> Iterator[Database]:
    database = Database(database_url)
    yield database
    database.dispose()


@pytest.fixture
def estate(db) -> dict[str, int]:
    with db.session() as session:
        server = ExchangeServer(name="EXCH-MBX01")
        policy = Policy(
            name="p",
            method=ProtectionMethod.VM_IMAGE,
            consistency=Consistency.CRASH,
            rpo_minutes=60,
        )
        session.add_all([server, policy])
        session.flush()
        return {"server": server.id, "policy": policy.id}


def add_point(db, estate, age_h: int, *locations: CopyLocation, **fields) -> int:
    with db.session() as session:
        point = RestorePoint(
            policy_id=estate["policy"],
            server_id=estate["server"],
            method=ProtectionMethod.VMFS_SNAPSHOT,
            consistency=Consistency.CRASH,
            captured_at=utcnow() - timedelta(hours=age_h),
            capabilities=["whole_database", "instant_recovery"],
            details={"snapshot_name": f"bulwark-job-{age_h}"},
            **fields,
        )
        point.copies = [
            RestorePointCopy(location=loc, reference=f"{loc.value}-{age_h}") for loc in locations
        ]
        session.add(point)
        session.flush()
        return point.id


def retain(db, estate, location=SNAP, keep=1, refuse=()) -> tuple[list[int], list[str]]:
    removed: list[str] = []

    def remove(copy) -> bool:
        if copy.reference in refuse:
            return False
        removed.append(copy.reference)
        return True

    done = retain_on_primary(
        db,
        policy_id=estate["policy"],
        server_id=estate["server"],
        database_id=None,
        location=location,
        keep=keep,
        remove=remove,
    )
    return done, removed


def point(db, point_id: int) -> RestorePoint:
    with db.session() as session:
        found = session.get(RestorePoint, point_id)
        session.expunge(found)
        return found


def test_keeps_the_newest_and_takes_the_copy_from_the_rest(db, estate):
    old = add_point(db, estate, 3, SNAP, REPO)
    older = add_point(db, estate, 4, SNAP)
    new = add_point(db, estate, 1, SNAP, REPO)
    done, removed = retain(db, estate, keep=1)
    assert sorted(done) == sorted([old, older]) and sorted(removed) == [
        "vm_snapshot-3",
        "vm_snapshot-4",
    ]
    # With a repository copy left the point stays, no longer instantly restorable.
    kept = point(db, old)
    assert kept.status == RestorePointStatus.AVAILABLE and kept.live_copies() != []
    assert [c.location for c in kept.live_copies()] == [REPO]
    assert "instant_recovery" not in kept.capabilities
    # Its last copy gone, the point expires.
    assert point(db, older).status == RestorePointStatus.EXPIRED
    assert point(db, new).live_copy(SNAP) is not None
    with db.session() as session:
        reasons = session.scalars(
            select(AuditEvent.detail).where(AuditEvent.action == "restore_point.expire")
        ).all()
    assert all(r["reason"] == "keep 1 on primary" for r in reasons) and len(reasons) == 2


def test_a_hold_keeps_a_copy_on_primary_only_while_it_is_the_last_copy(db, estate):
    only_snapshot = add_point(db, estate, 4, SNAP)
    with_image = add_point(db, estate, 3, SNAP, REPO)
    add_point(db, estate, 1, SNAP, REPO)
    with db.session() as session:
        session.add(
            LegalHold(
                name="records request",
                reason="litigation",
                scope="server",
                server_id=estate["server"],
                created_by="test",
            )
        )
    done, removed = retain(db, estate, keep=1)
    assert done == [with_image] and removed == ["vm_snapshot-3"]
    assert point(db, with_image).status == RestorePointStatus.AVAILABLE  # held: in the repo
    assert point(db, only_snapshot).live_copy(SNAP) is not None  # held: its only copy


def test_compliance_retention_is_decided_the_same_way(db, estate):
    until = utcnow() + timedelta(days=30)
    only_snapshot = add_point(db, estate, 4, SNAP, retain_until=until)
    with_image = add_point(db, estate, 3, SNAP, REPO, retain_until=until)
    add_point(db, estate, 1, SNAP)
    done, _ = retain(db, estate, keep=1)
    assert done == [with_image]
    assert point(db, only_snapshot).status == RestorePointStatus.AVAILABLE


def test_a_copy_the_remover_refuses_stays_and_so_does_the_catalog(db, estate):
    foreign = add_point(db, estate, 3, SNAP)
    add_point(db, estate, 1, SNAP)
    done, removed = retain(db, estate, keep=1, refuse={"vm_snapshot-3"})
    assert done == [] and removed == []
    assert point(db, foreign).live_copy(SNAP) is not None


def test_each_location_is_retained_on_its_own(db, estate):
    array_point = add_point(db, estate, 3, ARRAY)
    add_point(db, estate, 2, SNAP)
    add_point(db, estate, 1, SNAP)
    # Two VM snapshots and one array snapshot: keeping one of each removes one VM snapshot.
    assert retain(db, estate, location=ARRAY, keep=1) == ([], [])
    done, removed = retain(db, estate, location=SNAP, keep=1)
    assert removed == ["vm_snapshot-2"] and array_point not in done
