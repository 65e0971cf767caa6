"""The consistency table beside each declaration is what both the advisor and the strategy
read: every level a method lists has a quiescer, the strategy's quiescer is the table's, and
what the table needs the advisor demands of the policy."""

from types import SimpleNamespace

import pytest

from app.domain.advisor import PolicyRequest, policy_problems
from app.domain.declarations import Quiesce
from app.domain.protection import Consistency as C
from app.domain.protection import DatabaseLayout as L
from app.domain.protection import ProtectionMethod as M
from app.strategies.declarations import DECLARATIONS
from app.strategies.quiesce import (
    QUIESCERS,
    GuestScripts,
    PowerOff,
    Quiescer,
    ToolsQuiesce,
    quiescer_for,
)
from tests.strategies.conftest import FakeContext, policy

ROWS = [
    (d, layout, reach)
    for d in DECLARATIONS.values()
    for layout, reaches in d.reaches.items()
    for reach in reaches
]


def run_for(consistency, layout, **over):
    return SimpleNamespace(
        ctx=FakeContext(),
        policy=policy(consistency, **over),
        target=SimpleNamespace(layout=layout),
        details={},
    )


@pytest.mark.parametrize(("declaration", "layout", "reach"), ROWS)
def test_the_strategy_quiesces_the_way_the_table_says(declaration, layout, reach):
    run = run_for(reach.consistency, layout)
    chosen = quiescer_for(declaration, run, access=None)
    assert type(chosen) is QUIESCERS[reach.by]
    assert run.ctx.warnings() == []


def test_each_kind_of_quiescing_has_its_collaborator():
    assert QUIESCERS[Quiesce.TOOLS] is ToolsQuiesce and ToolsQuiesce.by_tools
    assert QUIESCERS[Quiesce.SCRIPTS] is GuestScripts
    assert QUIESCERS[Quiesce.POWER_OFF] is PowerOff
    assert QUIESCERS[Quiesce.NONE] is Quiescer


def test_the_levels_of_the_table_are_the_ones_it_reports_reached():
    run = run_for(C.WARM, L.VMDK, pre_script="x", post_script="y")
    assert GuestScripts(None).reached(run) == C.CRASH  # the script has not run
    run.details["quiesced_by_script"] = True
    assert GuestScripts(None).reached(run) == C.WARM
    assert PowerOff(None).reached(run) == C.COLD
    assert ToolsQuiesce(None).reached(run) == C.HOT_APPLICATION
    assert Quiescer(None).reached(run) == C.CRASH


def test_a_level_the_table_does_not_list_is_crash_consistent_and_says_so():
    # Validation refuses this policy; one saved before the rule is not promised more.
    run = run_for(C.HOT_APPLICATION, L.RDM_VIRTUAL)
    chosen = quiescer_for(DECLARATIONS[M.VMFS_SNAPSHOT], run, access=None)
    assert type(chosen) is Quiescer
    assert any("cannot reach hot_application" in w for w in run.ctx.warnings())


def request(layout, consistency, scripts: bool) -> PolicyRequest:
    return PolicyRequest(
        target="EXCH/DB",
        layout=layout,
        consistency=consistency,
        has_scripts=scripts,
        keep_on_primary=0,
        restores_needed=frozenset(),
    )


@pytest.mark.parametrize(("declaration", "layout", "reach"), ROWS)
def test_the_advisor_demands_scripts_exactly_where_the_table_quiesces_with_them(
    declaration, layout, reach
):
    if declaration.scope == "vm" and layout != L.VMDK:
        pytest.skip("a whole-VM method is checked on its system disk")
    without = policy_problems(declaration, request(layout, reach.consistency, scripts=False))
    needs_scripts = any("needs pre- and post-snapshot scripts" in p for p in without)
    assert needs_scripts == (reach.by == Quiesce.SCRIPTS), (declaration.method, reach)
    assert policy_problems(declaration, request(layout, reach.consistency, scripts=True)) == []


@pytest.mark.parametrize("method", [M.VMFS_SNAPSHOT, M.VM_IMAGE, M.ARRAY_SNAPSHOT])
def test_warm_without_scripts_is_refused_by_every_method_that_offers_it(method):
    declaration = DECLARATIONS[method]
    layout = next(iter(declaration.reaches))
    problems = policy_problems(declaration, request(layout, C.WARM, scripts=False))
    assert problems and "warm" in problems[0] and "scripts" in problems[0]
