"""Waiting for vCenter tasks.

A task is watched through a PropertyCollector of its own, reading only ``info.state``,
``info.error``, ``info.result`` and ``info.progress``. Two reasons not to read ``task.info``
whole: it costs more, and some servers put a non-entity into ``info.entity`` (the vSphere
simulator names the snapshot for a snapshot revert), which pyVmomi cannot decode.

Blocking, like the rest of the adapter: asyncio callers run it in a thread.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from pyVmomi import vim

from ._collector import PC, translated_faults
from .errors import ObjectNotFound, TaskCancelled, TaskFailed, TaskTimeout

log = logging.getLogger(__name__)

TASK_PROPERTIES = ("info.state", "info.error", "info.result", "info.progress")

ProgressCallback = Callable[[int], None]
CancelCheck = Callable[[], bool]


def fault_name(fault: Any) -> str:
    """``InvalidState`` for a ``vim.fault.InvalidState``."""
    return type(fault).__name__.rsplit(".", 1)[-1]


def wait_for_task(
    client: Any,
    task: Any,
    timeout: float,
    on_progress: ProgressCallback | None = None,
    cancel_check: CancelCheck | None = None,
    *,
    description: str | None = None,
    poll_seconds: int = 1,
) -> Any:
    """Wait until ``task`` (a pyVmomi task or its moref, "task-123") ends; return its result.

    ``on_progress(percent)`` is called whenever vCenter reports new progress.
    ``cancel_check()`` is asked about every ``poll_seconds``; when it returns True, the task is
    asked to cancel (if vCenter allows it) and :class:`TaskCancelled` is raised.

    Raises :class:`TaskFailed` with the fault's message when the task ends in error, and
    :class:`TaskTimeout` after ``timeout`` seconds (the task is left running).
    """
    task_obj = client.managed_object(vim.Task, task)
    task_id = task_obj._moId
    what = description or f"task {task_id}"
    deadline = time.monotonic() + timeout
    with translated_faults(client, f"waiting for {what}"):
        collector = client.content.propertyCollector.CreatePropertyCollector()
        try:
            collector.CreateFilter(
                PC.FilterSpec(
                    objectSet=[PC.ObjectSpec(obj=task_obj, skip=False)],
                    propSet=[PC.PropertySpec(type=vim.Task, pathSet=list(TASK_PROPERTIES))],
                ),
                partialUpdates=False,
            )
            return _watch(
                collector,
                task_obj,
                what,
                deadline,
                timeout,
                on_progress,
                cancel_check,
                poll_seconds,
            )
        finally:
            try:
                collector.Destroy()
            except Exception:  # noqa: BLE001 - the collector ends with the session anyway
                log.debug("could not destroy the collector for %s", task_id, exc_info=True)


def _watch(
    collector: Any,
    task_obj: Any,
    what: str,
    deadline: float,
    timeout: float,
    on_progress: ProgressCallback | None,
    cancel_check: CancelCheck | None,
    poll_seconds: int,
) -> Any:
    task_id = task_obj._moId
    info: dict[str, Any] = {}
    version = ""
    reported_progress = None
    while True:
        state = info.get("info.state")
        if state == vim.TaskInfo.State.success:
            return info.get("info.result")
        if state == vim.TaskInfo.State.error:
            fault = info.get("info.error")
            message = (
                (getattr(fault, "msg", None) or fault_name(fault)) if fault else "unknown error"
            )
            raise TaskFailed(task_id, what, message, fault_name(fault) if fault else None)
        if cancel_check is not None and cancel_check():
            _request_cancel(task_obj)
            raise TaskCancelled(task_id, what)
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TaskTimeout(task_id, what, timeout)

        wait = max(1, min(poll_seconds, int(remaining) or 1))
        update = collector.WaitForUpdatesEx(version, PC.WaitOptions(maxWaitSeconds=wait))
        if update is None:  # nothing changed within the wait
            continue
        version = update.version
        for filter_update in update.filterSet:
            for object_update in filter_update.objectSet:
                if object_update.kind == "leave":
                    raise ObjectNotFound(task_id, "task")
                for change in object_update.changeSet:
                    info[change.name] = None if change.op == "remove" else change.val
        progress = info.get("info.progress")
        if on_progress is not None and progress is not None and progress != reported_progress:
            reported_progress = progress
            on_progress(int(progress))


def _request_cancel(task_obj: Any) -> None:
    try:
        task_obj.CancelTask()
    except Exception:  # noqa: BLE001 - not every task can be cancelled; stop waiting anyway
        log.info("vCenter did not accept cancelling %s", task_obj._moId, exc_info=True)
