"""Guest operations: run a command inside a VM through VMware Tools and wait for its exit code.

This is how a policy's pre-snapshot (quiesce) and post-snapshot (resume) scripts run in an
Exchange server: ``GuestOperationsManager.processManager.StartProgramInGuest`` with the guest
account of the vCenter connection, then ``ListProcessesInGuest`` for that process id until it
has ended. Nothing is copied into the guest: the command must already make sense there.

Command lines: the operator writes a policy's script as one command line, as typed at a
prompt in the guest. In a Windows guest (``guest.guestFamily`` windowsGuest, or a ``win*``
guest id) it runs as ``C:\\Windows\\System32\\cmd.exe /c <command>``, so built-ins, ``&&``
and ``.cmd``/``.ps1`` launchers behave as at a command prompt; in any other guest it runs as
``/bin/sh -c '<command>'``. The exit code of the command is the exit code of that shell.

No message or log line ever contains the guest password; messages name the VM and the
program, not the whole command line (scripts sometimes carry arguments an operator would not
want in an event log).

Blocking, like the rest of the adapter: asyncio callers run it in a thread.
"""

from __future__ import annotations

import contextlib
import logging
import shlex
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pyVmomi import vim

from ._collector import retrieve_one, translated_faults
from .errors import AuthenticationFailed, TaskTimeout, VSphereError

log = logging.getLogger(__name__)

WINDOWS_SHELL = r"C:\Windows\System32\cmd.exe"
POSIX_SHELL = "/bin/sh"
TOOLS_RUNNING = "guestToolsRunning"
POLL_FIRST_S = 0.1
POLL_MAX_S = 1.0


@dataclass(frozen=True, slots=True)
class GuestResult:
    """How a command ended in the guest."""

    exit_code: int
    pid: int
    started: datetime | None
    ended: datetime | None


class GuestAuthenticationFailed(AuthenticationFailed):
    """The guest operating system refused the guest account (not vCenter's credentials)."""

    def __init__(self, vm: str, username: str) -> None:
        self.vm = vm
        self.username = username
        VSphereError.__init__(
            self,
            f"the guest rejected the user name or password (user {username!r} in {vm}); "
            "check the guest credentials of the vCenter connection",
        )


class GuestCommandTimeout(TaskTimeout):
    """A command in the guest did not end within its timeout; it was asked to end."""

    def __init__(self, vm: str, pid: int, program: str, seconds: float, terminated: bool):
        self.vm = vm
        self.pid = pid
        self.task = f"guest process {pid}"
        self.description = f"the command ({program}) in {vm}"
        self.seconds = seconds
        ended = (
            "the guest was asked to end it"
            if terminated
            else "it could not be ended and may still be running in the guest"
        )
        VSphereError.__init__(
            self,
            f"the command ({program}, pid {pid}) in {vm} did not finish within "
            f"{seconds:g} s; {ended}",
        )


def _is_windows(props: dict[str, Any]) -> bool:
    family = str(props.get("guest.guestFamily") or "")
    if family:
        return family == "windowsGuest"
    guest_id = str(props.get("config.guestId") or props.get("guest.guestId") or "")
    return guest_id.lower().startswith("win")


def program_spec(command: str, windows: bool) -> Any:
    """The ProgramSpec that runs ``command`` through the guest's shell."""
    if windows:
        return vim.vm.guest.ProcessManager.ProgramSpec(
            programPath=WINDOWS_SHELL, arguments=f"/c {command}"
        )
    return vim.vm.guest.ProcessManager.ProgramSpec(
        programPath=POSIX_SHELL, arguments=f"-c {shlex.quote(command)}"
    )


class GuestOperations:
    """Runs commands in guests as one guest account (the vCenter connection's).

    The password stays in this object; ``repr`` and every error leave it out.
    """

    def __init__(self, username: str, password: str) -> None:
        if not username:
            raise VSphereError("guest operations need a guest user name")
        self.username = username
        self._password = password

    def __repr__(self) -> str:
        return f"GuestOperations(user={self.username!r})"

    def _auth(self) -> Any:
        return vim.vm.guest.NamePasswordAuthentication(
            username=self.username, password=self._password, interactiveSession=False
        )

    def run(
        self,
        client: Any,
        vm_moref: str,
        command: str,
        *,
        timeout_s: float,
        on_started: Callable[[int], None] | None = None,
    ) -> GuestResult:
        """Run ``command`` in the guest of ``vm_moref``; wait for it to end; return its exit
        code (a non-zero exit is a result, not an error: the caller decides).

        ``on_started(pid)`` is called as soon as the guest has started the process, before
        waiting: a caller that may die meanwhile records the pid, so whoever cleans up after
        it can wait for that process (:meth:`wait`) before undoing what it does.

        Raises :class:`GuestAuthenticationFailed` (an :class:`AuthenticationFailed`) when the
        guest refuses the account, :class:`VSphereError` when VMware Tools does not run or the
        VM is off, and :class:`GuestCommandTimeout` (a :class:`TaskTimeout`) when the command
        has not ended after ``timeout_s`` seconds (it is then terminated in the guest).
        """
        if not command or not command.strip():
            raise VSphereError("no command to run in the guest")
        vm, label, props = self._ready_vm(client, vm_moref)
        spec = program_spec(command, _is_windows(props))
        program = spec.programPath.replace("\\", "/").rsplit("/", 1)[-1]
        manager = self._process_manager(client, label)
        auth = self._auth()

        with self._guest_faults(client, label, f"starting {program}"):
            pid = int(manager.StartProgramInGuest(vm=vm, auth=auth, spec=spec))
        log.info("started %s in %s as pid %s (user %s)", program, label, pid, self.username)
        if on_started is not None:
            on_started(pid)
        result = self._wait(client, manager, vm, auth, pid, program, label, timeout_s)
        if result is None:
            raise VSphereError(
                f"the guest of {label} no longer lists {program} (pid {pid}); "
                "its exit code is unknown"
            )
        return result

    def wait(self, client: Any, vm_moref: str, pid: int, *, timeout_s: float) -> GuestResult | None:
        """Wait for a process started earlier (perhaps by a worker that died) to end.

        Returns None when the guest no longer lists it (it ended long ago, or the guest
        restarted). Raises :class:`GuestCommandTimeout` after ``timeout_s`` seconds, having
        asked the guest to end the process.
        """
        vm, label, _ = self._ready_vm(client, vm_moref)
        manager = self._process_manager(client, label)
        return self._wait(client, manager, vm, self._auth(), pid, f"pid {pid}", label, timeout_s)

    def _ready_vm(self, client: Any, vm_moref: str) -> tuple[Any, str, dict[str, Any]]:
        """The VM, its label for messages and its guest facts; refuses a VM that cannot run
        guest operations (off, or without running VMware Tools)."""
        vm = client.managed_object(vim.VirtualMachine, vm_moref)
        vm_id = vm._moId
        with translated_faults(client, f"reading the guest state of {vm_id}"):
            props = retrieve_one(
                client,
                vm,
                vim.VirtualMachine,
                [
                    "name",
                    "runtime.powerState",
                    "guest.toolsRunningStatus",
                    "guest.guestFamily",
                    "config.guestId",
                ],
            )
        label = f"{props.get('name') or vm_id} ({vm_id})"
        if "runtime.powerState" not in props:  # every VM has one: the read came back empty
            raise VSphereError(
                f"vCenter did not report the state of {label}; the session may have ended"
            )
        if str(props.get("runtime.powerState")) != "poweredOn":
            raise VSphereError(
                f"cannot run a command in {label}: the VM is "
                f"{props.get('runtime.powerState') or 'not powered on'}"
            )
        if props.get("guest.toolsRunningStatus") != TOOLS_RUNNING:
            raise VSphereError(
                f"cannot run a command in {label}: VMware Tools is not running in the guest"
            )
        return vm, label, props

    def _wait(
        self,
        client: Any,
        manager: Any,
        vm: Any,
        auth: Any,
        pid: int,
        program: str,
        label: str,
        timeout_s: float,
    ) -> GuestResult | None:
        deadline = time.monotonic() + timeout_s
        delay = POLL_FIRST_S
        while True:
            with self._guest_faults(client, label, f"watching {program} (pid {pid})"):
                infos = manager.ListProcessesInGuest(vm=vm, auth=auth, pids=[pid])
            info = next((p for p in infos or [] if int(p.pid) == pid), None)
            if info is None:
                return None
            if info.endTime is not None or info.exitCode is not None:
                return GuestResult(
                    exit_code=int(info.exitCode or 0),
                    pid=pid,
                    started=info.startTime,
                    ended=info.endTime,
                )
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                terminated = self._terminate(client, manager, vm, auth, pid, label)
                raise GuestCommandTimeout(label, pid, program, timeout_s, terminated)
            time.sleep(min(delay, remaining))
            delay = min(delay * 2, POLL_MAX_S)

    def _process_manager(self, client: Any, label: str) -> Any:
        with translated_faults(client, f"finding the guest operations of vCenter for {label}"):
            manager = client.content.guestOperationsManager
            process_manager = manager.processManager if manager is not None else None
        if process_manager is None:
            raise VSphereError("this vCenter offers no guest operations (process manager)")
        return process_manager

    def _terminate(self, client: Any, manager: Any, vm: Any, auth: Any, pid: int, label: str):
        try:
            with self._guest_faults(client, label, f"ending pid {pid}"):
                manager.TerminateProcessInGuest(vm=vm, auth=auth, pid=pid)
            return True
        except VSphereError as exc:
            log.warning("could not end pid %s in %s: %s", pid, label, exc)
            return False

    @contextlib.contextmanager
    def _guest_faults(self, client: Any, label: str, action: str):
        """Guest faults in operator words; everything else as the adapter translates it."""
        with translated_faults(client, f"{action} in {label}"):
            try:
                yield
            except (
                vim.fault.InvalidGuestLogin,
                vim.fault.GuestPermissionDenied,
                vim.fault.GuestAuthenticationChallenge,
            ):
                raise GuestAuthenticationFailed(label, self.username) from None
            except (vim.fault.GuestOperationsUnavailable, vim.fault.ToolsUnavailable):
                raise VSphereError(
                    f"{action} in {label} failed: VMware Tools is not running in the guest "
                    "(or does not offer guest operations)"
                ) from None
            except vim.fault.InvalidPowerState:
                raise VSphereError(
                    f"{action} in {label} failed: the VM is not powered on"
                ) from None
            except vim.fault.GuestProcessNotFound:
                raise VSphereError(
                    f"{action} in {label} failed: the guest has no such process"
                ) from None
