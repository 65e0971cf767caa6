"""Guest operations against the lab's stand-in guest.

The lab cannot hold a Windows guest running Exchange; its stand-in guest (lab/guest.go)
answers VMware Tools guest operations instead and interprets command lines by fixed rules
("exit N" exits N, "sleep S" runs S seconds), logging every process to the estate's
``guest_log``. What is under test is Bulwark's client: the calls, the waiting, the timeouts and
the errors.
"""

from __future__ import annotations

import json
import time
from datetime import datetime

import pytest

from app.adapters import vsphere
from app.adapters.vsphere import VSphereClient
from app.adapters.vsphere.guest import POSIX_SHELL, WINDOWS_SHELL, program_spec
from tests.lab_fixture import Lab

pytestmark = pytest.mark.lab


def guest_log(lab: Lab) -> list[dict]:
    with open(lab.estate["guest_log"]) as f:
        return [json.loads(line) for line in f if line.strip()]


def log_of(lab: Lab, pid: int) -> dict:
    return next(line for line in guest_log(lab) if line["pid"] == pid)


def stamp(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00")[:26] + "+00:00")


@pytest.fixture(scope="module")
def guest(lab: Lab) -> vsphere.GuestOperations:
    return vsphere.GuestOperations(lab.estate["guest_username"], lab.estate["guest_password"])


@pytest.fixture(scope="module")
def vm(lab: Lab) -> str:
    return lab.exchange_vm("EXCH-MBX03")["moref"]


def test_a_command_runs_through_cmd_in_a_windows_guest(lab, client, guest, vm):
    result = guest.run(client, vm, "echo quiesce DB03", timeout_s=10)
    assert result.exit_code == 0
    assert result.pid > 0
    assert result.started is not None and result.ended is not None
    line = log_of(lab, result.pid)
    assert line["vm"] == vm and line["vm_name"] == "EXCH-MBX03"
    assert line["program"] == WINDOWS_SHELL
    assert line["arguments"] == "/c echo quiesce DB03"
    assert line["user"] == lab.estate["guest_username"]
    assert line["exit_code"] == 0 and line["terminated"] is False


def test_a_non_zero_exit_is_a_result_not_an_error(lab, client, guest, vm):
    result = guest.run(client, vm, "freeze.cmd DB03 & exit 3", timeout_s=10)
    assert result.exit_code == 3
    assert log_of(lab, result.pid)["arguments"] == "/c freeze.cmd DB03 & exit 3"


def test_the_command_is_waited_for(lab, client, guest, vm):
    began = time.monotonic()
    result = guest.run(client, vm, "sleep 0.6", timeout_s=10)
    assert time.monotonic() - began >= 0.6
    assert result.exit_code == 0
    assert (result.ended - result.started).total_seconds() == pytest.approx(0.6, abs=0.05)
    line = log_of(lab, result.pid)
    assert (stamp(line["ended"]) - stamp(line["started"])).total_seconds() == pytest.approx(
        0.6, abs=0.01
    )


def test_a_command_that_overruns_is_ended_and_reported(lab, client, guest, vm):
    began = time.monotonic()
    with pytest.raises(vsphere.TaskTimeout) as caught:
        guest.run(client, vm, "sleep 30", timeout_s=0.5)
    assert time.monotonic() - began < 5
    err = caught.value
    assert isinstance(err, vsphere.GuestCommandTimeout)
    message = str(err)
    assert "did not finish within 0.5 s" in message and "EXCH-MBX03" in message
    assert "asked to end it" in message
    assert lab.estate["guest_password"] not in message
    line = log_of(lab, err.pid)
    assert line["terminated"] is True
    assert (stamp(line["ended"]) - stamp(line["started"])).total_seconds() < 5


def test_wrong_guest_credentials(lab, client, vm):
    wrong = vsphere.GuestOperations(lab.estate["guest_username"], "not-the-guest-password")
    with pytest.raises(vsphere.AuthenticationFailed) as caught:
        wrong.run(client, vm, "exit 0", timeout_s=5)
    message = str(caught.value)
    assert message.startswith("the guest rejected the user name or password")
    assert "not-the-guest-password" not in message
    assert "not-the-guest-password" not in repr(wrong)
    other_user = vsphere.GuestOperations("CORP\\someone", lab.estate["guest_password"])
    with pytest.raises(vsphere.GuestAuthenticationFailed):
        other_user.run(client, vm, "exit 0", timeout_s=5)
    assert lab.estate["guest_password"] not in repr(other_user)


def test_user_names_are_case_insensitive_like_windows(lab, client, vm):
    upper = vsphere.GuestOperations(
        lab.estate["guest_username"].upper(), lab.estate["guest_password"]
    )
    assert upper.run(client, vm, "exit 0", timeout_s=5).exit_code == 0


def test_no_tools_no_guest_operations(lab, client, guest):
    # Every 13th ordinary VM has no VMware Tools (see lab/README.md); VM 13 is powered on.
    no_tools = lab.estate["ordinary_vms"][12]
    assert no_tools["power_state"] == "poweredOn"
    with pytest.raises(vsphere.VSphereError, match="VMware Tools is not running") as caught:
        guest.run(client, no_tools["moref"], "exit 0", timeout_s=5)
    assert not isinstance(caught.value, vsphere.AuthenticationFailed)


def test_a_powered_off_vm_runs_nothing(lab, client, guest):
    off = next(v for v in lab.estate["ordinary_vms"] if v["power_state"] == "poweredOff")
    with pytest.raises(vsphere.VSphereError, match="poweredOff"):
        guest.run(client, off["moref"], "exit 0", timeout_s=5)


def test_a_linux_guest_runs_the_command_through_sh(lab, client, guest):
    web = lab.estate["ordinary_vms"][0]  # WEB-0001: Ubuntu, tools running
    assert web["name"].startswith("WEB-")
    result = guest.run(client, web["moref"], "echo it's quiet && exit 4", timeout_s=5)
    assert result.exit_code == 4
    line = log_of(lab, result.pid)
    assert line["program"] == POSIX_SHELL
    assert line["arguments"] == "-c 'echo it'\"'\"'s quiet && exit 4'"


def test_an_empty_command_is_refused(client, guest, vm):
    with pytest.raises(vsphere.VSphereError, match="no command"):
        guest.run(client, vm, "  ", timeout_s=5)


def test_program_specs():
    windows = program_spec('net stop "MSExchangeIS"', windows=True)
    assert (windows.programPath, windows.arguments) == (
        WINDOWS_SHELL,
        '/c net stop "MSExchangeIS"',
    )
    posix = program_spec("a b", windows=False)
    assert (posix.programPath, posix.arguments) == (POSIX_SHELL, "-c 'a b'")


def test_every_invocation_is_logged_in_order(lab: Lab, client: VSphereClient, guest, vm):
    before = len(guest_log(lab))
    pids = [guest.run(client, vm, f"step {i}", timeout_s=5).pid for i in range(3)]
    lines = guest_log(lab)[before:]
    assert [line["pid"] for line in lines] == pids
    assert [line["arguments"] for line in lines] == [f"/c step {i}" for i in range(3)]
    starts = [stamp(line["started"]) for line in lines]
    assert starts == sorted(starts)
