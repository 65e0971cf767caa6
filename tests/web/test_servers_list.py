"""The Exchange servers list says, per server, whether it is protected, its last backup and
its newest restore point, with VM names rather than morefs."""

from __future__ import annotations

import re

from sqlalchemy import update

from app.db.models import Policy, PolicyTarget, RestorePoint, VirtualMachine
from app.domain.protection import Consistency, ProtectionMethod
from tests.e2e.estate import seed_estate


def _row(page: str, server: str) -> str:
    rows = re.findall(r"<tr>.*?</tr>", page, re.S)
    return next(r for r in rows if f">{server}</a>" in r)


def test_servers_list_shows_protection_last_backup_and_newest_point(app, admin_client, settings):
    ids = seed_estate(settings.database_url)
    with app.state.runtime.db.session() as s:
        s.add(VirtualMachine(connection_id=ids["vcenter"], moref="vm-102", name="exch-mbx02.corp"))
    with app.state.runtime.db.session() as s:
        policy = Policy(
            name="hourly",
            method=ProtectionMethod.VMFS_SNAPSHOT,
            consistency=Consistency.HOT_CRASH_SCRIPTED,
            rpo_minutes=24 * 60,
        )
        s.add(policy)
        s.flush()
        s.add(PolicyTarget(policy_id=policy.id, server_id=ids["mbx2"]))
        # The estate's points of EXCH-MBX02 were made by this policy.
        s.execute(
            update(RestorePoint)
            .where(RestorePoint.server_id == ids["mbx2"])
            .values(policy_id=policy.id)
        )
    page = admin_client.get("/servers").text
    protected = _row(page, "EXCH-MBX02")
    assert "Within objective" in protected
    assert "Succeeded" in protected and "ago" in protected  # its last backup job
    assert "Hot, quiesced by scripts" in protected  # consistency of the newest point
    assert "exch-mbx02.corp" in protected and "vm-102" not in protected
    unprotected = _row(page, "EXCH-MBX01")
    assert "Unprotected" in unprotected and "no policy covers it" in unprotected
    assert "Running" in unprotected  # a backup job runs for it now
    assert "none yet" in unprotected
