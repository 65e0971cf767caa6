"""The VMFS snapshot strategy driven on its own through a fake job context, against the lab
vCenter and its stand-in guest: the quiescer the table picks runs, the point says what was
reached, leftovers are recorded first and cleaned up, retention never removes a foreign
snapshot."""

from __future__ import annotations

import pytest

from app.adapters import vsphere
from app.domain.protection import Consistency as C
from app.domain.protection import CopyLocation
from app.domain.protection import DatabaseLayout as L
from app.strategies import quiesce
from app.strategies.base import PrimaryCopy
from app.strategies.vm_snapshot import VmSnapshot, is_bulwark_snapshot
from tests.protection.conftest import guest_log, wait_for_guest_log
from tests.strategies.conftest import FakeContext, backup_run, policy, target

pytestmark = pytest.mark.lab

QUIESCE = "quiesce-db.cmd DB03 & sleep 0.2"
RESUME = "resume-db.cmd DB03"


def bulwark(client, vm: str) -> list[vsphere.Snapshot]:
    return [s for s in vsphere.list_snapshots(client, vm) if is_bulwark_snapshot(s.name)]


def test_hot_application_on_a_vmdk_is_a_quiesced_snapshot_by_vmware_tools(lab, services):
    ctx = FakeContext()
    run = backup_run(ctx, policy(C.HOT_APPLICATION), target(lab, "EXCH-MBX01", L.VMDK, 1))
    VmSnapshot(services).run(run)
    assert run.consistency_reached == C.HOT_APPLICATION
    client = services.vcenter.client(1)
    (snap,) = bulwark(client, run.target.vm_moref)
    assert snap.quiesced and snap.name == f"bulwark-job-{ctx.job_id}"
    assert [c.location for c in run.copies] == [CopyLocation.VM_SNAPSHOT]
    # Until the catalog names it, the snapshot is the job's leftover; nothing else is.
    assert [x["kind"] for x in ctx.leftovers] == ["vm_snapshot"]
    assert guest_log(lab, run.target.vm_moref) == []  # Tools, not scripts


def test_scripts_quiesce_and_resume_a_database_on_a_virtual_rdm(lab, services):
    ctx = FakeContext()
    spec = policy(C.HOT_CRASH_SCRIPTED, pre_script=QUIESCE, post_script=RESUME)
    run = backup_run(ctx, spec, target(lab, "EXCH-MBX03", L.RDM_VIRTUAL, 3))
    VmSnapshot(services).run(run)
    assert run.consistency_reached == C.HOT_CRASH_SCRIPTED
    pre, post = wait_for_guest_log(lab, run.target.vm_moref, 2)
    assert "quiesce-db" in pre["arguments"] and "resume-db" in post["arguments"]
    assert run.quiesce_window_s is not None and run.details["pre_script_exit"] == 0
    (snap,) = bulwark(services.vcenter.client(1), run.target.vm_moref)
    assert not snap.quiesced  # the scripts quiesced, not VMware Tools
    assert [x["kind"] for x in ctx.leftovers] == ["vm_snapshot"]  # resumed: not owed


def test_cold_shuts_the_vm_down_for_the_snapshot_and_powers_it_on(lab, services):
    ctx = FakeContext()
    run = backup_run(ctx, policy(C.COLD), target(lab, "EXCH-MBX01", L.VMDK, 1))
    VmSnapshot(services).run(run)
    client = services.vcenter.client(1)
    assert run.consistency_reached == C.COLD
    assert run.details["shutdown"]
    assert vsphere.power_state(client, run.target.vm_moref) == "poweredOn"
    (snap,) = bulwark(client, run.target.vm_moref)
    assert snap.vm_power_state == "poweredOff"
    assert [x["kind"] for x in ctx.leftovers] == ["vm_snapshot"]


def test_a_warm_policy_saved_without_scripts_says_it_is_crash_consistent(lab, services):
    # Validation refuses it now; a policy saved before that rule records what it reached.
    ctx = FakeContext()
    run = backup_run(ctx, policy(C.WARM), target(lab, "EXCH-MBX01", L.VMDK, 1))
    VmSnapshot(services).run(run)
    assert run.consistency_reached == C.CRASH
    assert guest_log(lab, run.target.vm_moref) == []


def test_cleanup_resumes_what_a_dead_run_quiesced_and_removes_its_snapshot(lab, services):
    ctx = FakeContext()
    spec = policy(C.HOT_CRASH_SCRIPTED, pre_script=QUIESCE, post_script=RESUME)
    run = backup_run(ctx, spec, target(lab, "EXCH-MBX03", L.RDM_VIRTUAL, 3))
    strategy = VmSnapshot(services)
    strategy.run(run)
    # As if the worker died before resuming: the quiesce leftover is owed again.
    owed = [*ctx.leftovers, quiesce.leftover(run, "quiesced")]
    later = FakeContext(job_id=ctx.job_id, attempt=2)
    later.leftovers = [dict(x) for x in owed]
    strategy.cleanup(later, list(later.leftovers))
    assert later.leftovers == []
    assert bulwark(services.vcenter.client(1), run.target.vm_moref) == []
    text = later.messages()
    assert "removed snapshot bulwark-job-" in text
    assert "ran the post-snapshot script an interrupted run owed" in text


def test_retention_removes_bulwark_snapshots_and_never_a_foreign_one(lab, services):
    client = services.vcenter.client(1)
    vm = lab.exchange_vm("EXCH-MBX01")["moref"]
    foreign = vsphere.create_snapshot(client, vm, "before patching", "an operator's")
    ours = vsphere.create_snapshot(client, vm, "bulwark-job-12", "Bulwark's")
    services.on_primary = [
        PrimaryCopy(1, foreign, 1, {"snapshot_name": "before patching"}),
        PrimaryCopy(2, ours, 1, {"snapshot_name": "bulwark-job-12"}),
    ]
    ctx = FakeContext()
    run = backup_run(ctx, policy(C.CRASH, keep_on_primary=2), target(lab, "EXCH-MBX01", L.VMDK))
    assert VmSnapshot(services).retain(run) == [2]
    assert services.retained == [{"policy": 1, "location": CopyLocation.VM_SNAPSHOT, "keep": 2}]
    left = {s.moref for s in vsphere.list_snapshots(client, vm)}
    assert foreign in left and ours not in left
