"""The restore-mode registry: which mode takes which request, and what it needs."""

from types import SimpleNamespace

import pytest

from app.domain.protection import ProtectionMethod
from app.protection.restores import registry


def point(method: ProtectionMethod) -> SimpleNamespace:
    return SimpleNamespace(method=method)


VM_METHODS = (ProtectionMethod.VMFS_SNAPSHOT, ProtectionMethod.VM_IMAGE)


@pytest.mark.parametrize("method", VM_METHODS)
@pytest.mark.parametrize(
    ("mode", "module"),
    [(None, "revert"), ("revert", "revert"), ("new_vm", "new_vm"), ("disk", "disk")],
)
def test_a_vm_point_is_restored_by_the_vm_modes(method, mode, module):
    params = {} if mode is None else {"mode": mode}
    found = registry.find(point(method), params)
    assert found is not None and found.run.__module__ == f"app.protection.restores.{module}"
    assert found.capabilities == ("vcenter",)


@pytest.mark.parametrize("mode", [None, "revert", "clone", "volume"])
def test_an_array_point_is_restored_by_the_array_modes_which_need_an_array(mode):
    params = {} if mode is None else {"mode": mode}
    found = registry.find(point(ProtectionMethod.ARRAY_SNAPSHOT), params)
    assert found is not None and found.run.__module__ == "app.protection.restores.array"
    assert found.capabilities == ("vcenter", "array")


def test_mail_restores_need_no_catalog_point_and_only_the_mail_capability():
    found = registry.find(None, {"mode": "mailbox"})
    assert found is not None and found.capabilities == ("mail",)
    assert found.confirm is None  # queued by the mail API, not POST /jobs


def test_a_mode_of_another_kind_of_point_is_not_found():
    assert registry.find(point(ProtectionMethod.ARRAY_SNAPSHOT), {"mode": "disk"}) is None
    assert registry.find(point(ProtectionMethod.VM_IMAGE), {"mode": "clone"}) is None
    assert registry.find(point(ProtectionMethod.VM_IMAGE), {"mode": "teleport"}) is None


def test_no_two_modes_take_the_same_request():
    kinds = [None, *(point(m) for m in ProtectionMethod)]
    for kind in kinds:
        for name in {n for m in registry.modes() for n in m.names}:
            taking = [m for m in registry.modes() if name in m.names and m.applies_to(kind)]
            assert len(taking) <= 1, (name, kind, taking)


def test_post_jobs_offers_the_modes_that_check_their_own_request():
    assert registry.offered(point(ProtectionMethod.VM_IMAGE)) == ["new_vm", "revert"]
    assert registry.offered(point(ProtectionMethod.ARRAY_SNAPSHOT)) == ["revert", "clone", "volume"]
