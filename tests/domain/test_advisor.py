"""The advisor's verdict for every layout and every whitepaper rule."""

from __future__ import annotations

from dataclasses import replace

import pytest

from app.domain.advisor import PolicyRequest, advise, policy_problems
from app.domain.protection import Consistency as C
from app.domain.protection import DatabaseLayout as L
from app.domain.protection import ProtectionMethod as M
from app.domain.protection import RestoreCapability as R
from app.strategies import DECLARATIONS


def _options(layout):
    return {o.method: o for o in advise(DECLARATIONS.values(), layout)}


def test_database_on_vmdk():
    opts = _options(L.VMDK)
    assert opts["agent_stream"].applies and opts["mailbox"].applies
    assert opts["vmfs_snapshot"].applies
    assert not opts["array_snapshot"].applies
    assert set(opts["mailbox"].restores) == {"whole_database", "mailbox", "message"}
    assert opts["agent_stream"].consistency[0]["consistency"] == "hot_application"
    # VMware Tools drives VSS: a VMFS snapshot of a VMDK can be hot and application-consistent.
    assert opts["vmfs_snapshot"].consistency[0]["consistency"] == "hot_application"


def test_database_on_physical_rdm():
    opts = _options(L.RDM_PHYSICAL)
    assert opts["array_snapshot"].applies
    assert opts["array_snapshot"].consistency[0]["consistency"] == "hot_application"
    assert opts["array_snapshot"].restores_from_primary == ["instant_recovery"]
    vmfs = opts["vmfs_snapshot"]
    assert not vmfs.applies and "VMFS cannot snapshot" in vmfs.reason
    assert "array" in vmfs.reason
    assert not opts["mailbox"].applies and not opts["agent_stream"].applies
    # Methods that apply are listed first.
    assert next(iter(_options(L.RDM_PHYSICAL))) == "array_snapshot"


def test_database_on_virtual_rdm():
    opts = _options(L.RDM_VIRTUAL)
    vmfs = opts["vmfs_snapshot"]
    assert vmfs.applies
    reached = [c["consistency"] for c in vmfs.consistency]
    assert reached == ["hot_crash_scripted", "warm", "cold"]  # never hot_application
    assert any("pre- and post-snapshot scripts" in n for n in vmfs.consistency[0]["needs"])
    assert vmfs.restores == ["whole_database"]
    assert not opts["array_snapshot"].applies and not opts["mailbox"].applies


def _request(layout, consistency, *, scripts=False, keep=0, restores=()):
    return PolicyRequest(
        target="EXCH/DB01",
        layout=layout,
        consistency=consistency,
        has_scripts=scripts,
        keep_on_primary=keep,
        restores_needed=frozenset(restores),
    )


def test_refuses_vmfs_snapshot_of_physical_rdm():
    problems = policy_problems(DECLARATIONS[M.VMFS_SNAPSHOT], _request(L.RDM_PHYSICAL, C.CRASH))
    assert problems and "VMFS cannot snapshot" in problems[0]


def test_refuses_single_mailbox_restore_from_database_backup():
    for method, layout in (
        (M.VMFS_SNAPSHOT, L.RDM_VIRTUAL),
        (M.ARRAY_SNAPSHOT, L.RDM_PHYSICAL),
        (M.AGENT_STREAM, L.VMDK),
    ):
        consistency = DECLARATIONS[method].reach_on(layout)[0].consistency
        problems = policy_problems(
            DECLARATIONS[method], _request(layout, consistency, scripts=True, restores=[R.MAILBOX])
        )
        assert any("never a single mailbox" in p for p in problems), (method, problems)
    ok = policy_problems(
        DECLARATIONS[M.MAILBOX],
        _request(L.VMDK, C.HOT_APPLICATION, restores=[R.MAILBOX, R.MESSAGE]),
    )
    assert ok == []


def test_refuses_hot_virtual_rdm_without_scripts():
    vmfs = DECLARATIONS[M.VMFS_SNAPSHOT]
    problems = policy_problems(vmfs, _request(L.RDM_VIRTUAL, C.HOT_CRASH_SCRIPTED))
    assert problems and "needs pre- and post-snapshot scripts" in problems[0]
    assert policy_problems(vmfs, _request(L.RDM_VIRTUAL, C.HOT_CRASH_SCRIPTED, scripts=True)) == []
    hot = policy_problems(vmfs, _request(L.RDM_VIRTUAL, C.HOT_APPLICATION, scripts=True))
    assert hot and "cannot reach hot_application" in hot[0]
    assert policy_problems(vmfs, _request(L.RDM_VIRTUAL, C.COLD)) == []


def test_instant_recovery_needs_snapshots_kept_on_primary():
    array = DECLARATIONS[M.ARRAY_SNAPSHOT]
    req = _request(L.RDM_PHYSICAL, C.HOT_APPLICATION, restores=[R.INSTANT_RECOVERY])
    assert "keep_on_primary" in policy_problems(array, req)[0]
    req = _request(L.RDM_PHYSICAL, C.HOT_APPLICATION, keep=3, restores=[R.INSTANT_RECOVERY])
    assert policy_problems(array, req) == []


@pytest.mark.parametrize("method", [M.VMFS_SNAPSHOT, M.ARRAY_SNAPSHOT, M.AGENT_STREAM, M.MAILBOX])
def test_database_methods_need_a_database_target(method):
    problems = policy_problems(DECLARATIONS[method], _request(None, C.CRASH))
    assert "pick a database" in problems[0]


def test_vm_image_protects_the_application():
    vm = DECLARATIONS[M.VM_IMAGE]
    assert policy_problems(vm, _request(None, C.HOT_APPLICATION)) == []
    assert vm.restores == {R.WHOLE_VM}
    assert "pick a database" not in " ".join(policy_problems(vm, _request(None, C.CRASH)))


def test_every_layout_has_a_method_and_reasons_for_the_rest():
    database_methods = [d for d in DECLARATIONS.values() if d.scope == "database"]
    for layout in L:
        opts = advise(database_methods, layout)
        assert any(o.applies for o in opts)
        for o in opts:
            assert o.reason and (o.applies or o.reason != "not for this layout"), (layout, o)


def test_log_disk_a_snapshot_method_cannot_take_rules_it_out():
    # Database on a VMDK, logs on a physical-mode RDM: VMFS snapshots would miss the logs.
    opts = {o.method: o for o in advise(DECLARATIONS.values(), L.VMDK, L.RDM_PHYSICAL)}
    vmfs = opts["vmfs_snapshot"]
    assert not vmfs.applies and vmfs.consistency == [] and vmfs.restores == []
    assert "logs are on a physical-mode RDM" in vmfs.reason
    assert "VMFS cannot snapshot" in vmfs.reason  # the whitepaper's reason, quoted
    # Methods that read through the guest do not care which disk the logs are on.
    assert opts["agent_stream"].applies and opts["mailbox"].applies
    # Database on a physical-mode RDM, logs on a VMDK: the array cannot snapshot the logs.
    array = {o.method: o for o in advise(DECLARATIONS.values(), L.RDM_PHYSICAL, L.VMDK)}
    assert not array["array_snapshot"].applies
    assert "logs are on a VMDK" in array["array_snapshot"].reason


def test_log_disk_of_another_kind_limits_consistency_to_what_both_reach():
    # Logs on a virtual-mode RDM: VMFS snapshots take both, but VSS through VMware Tools does
    # not make the RDM application-consistent, so the best is scripted.
    opts = {o.method: o for o in advise(DECLARATIONS.values(), L.VMDK, L.RDM_VIRTUAL)}
    vmfs = opts["vmfs_snapshot"]
    assert vmfs.applies
    levels = [c["consistency"] for c in vmfs.consistency]
    assert "hot_application" not in levels and levels[0] == "hot_crash_scripted"
    same = {o.method: o for o in advise(DECLARATIONS.values(), L.VMDK, L.VMDK)}
    assert same["vmfs_snapshot"].consistency == _options(L.VMDK)["vmfs_snapshot"].consistency


def test_policy_problems_name_the_log_disk():
    request = PolicyRequest(
        target="EXCH-MBX07/DB70",
        layout=L.VMDK,
        consistency=C.HOT_APPLICATION,
        has_scripts=False,
        keep_on_primary=1,
        restores_needed=frozenset({R.WHOLE_DATABASE}),
        log_layout=L.RDM_PHYSICAL,
    )
    (problem,) = policy_problems(DECLARATIONS[M.VMFS_SNAPSHOT], request)
    assert problem.startswith("EXCH-MBX07/DB70: the logs are on a physical-mode RDM")
    scripted = PolicyRequest(**{**request.__dict__, "log_layout": L.RDM_VIRTUAL})
    (problem,) = policy_problems(DECLARATIONS[M.VMFS_SNAPSHOT], scripted)
    assert "cannot reach hot_application" in problem
    assert policy_problems(DECLARATIONS[M.AGENT_STREAM], request) == []


def test_a_vm_image_cannot_keep_snapshots_on_primary():
    request = PolicyRequest(
        target="EXCH-MBX07",
        layout=None,
        consistency=C.CRASH,
        has_scripts=False,
        keep_on_primary=2,
        restores_needed=frozenset({R.WHOLE_VM}),
    )
    (problem,) = policy_problems(DECLARATIONS[M.VM_IMAGE], request)
    assert "cannot keep snapshots on primary storage" in problem
    assert "keep_on_primary to 0" in problem
    assert policy_problems(DECLARATIONS[M.VM_IMAGE], replace(request, keep_on_primary=0)) == []
