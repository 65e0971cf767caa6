"""Errors of the vSphere adapter, worded for the operator who has to act on them.

Every error raised out of this package is a :class:`VSphereError`; the subclasses tell the
caller (and the dashboard) which action fits: correct the credentials, check the address or
the network, trust the certificate, or look at the failed task. No message ever contains a
password.
"""

from __future__ import annotations


class VSphereError(Exception):
    """Something went wrong talking to vCenter or ESXi. ``str(err)`` is operator-readable.

    ``permanent`` says whether trying again can help: a timeout or a reset connection may
    pass, a missing object or an untrusted certificate stays until someone acts.
    """

    permanent = False


class AuthenticationFailed(VSphereError):
    """vCenter refused the credentials."""

    permanent = True  # retrying a wrong password only locks the account out

    def __init__(self, host: str, port: int, username: str) -> None:
        self.host = host
        self.port = port
        self.username = username
        super().__init__(
            f"vCenter rejected the user name or password (user {username!r} at {host}:{port})"
        )


class Unreachable(VSphereError):
    """Nothing answered at host:port (refused, timed out, unknown name, not vSphere)."""

    def __init__(self, host: str, port: int, reason: str) -> None:
        self.host = host
        self.port = port
        self.reason = reason
        super().__init__(f"cannot reach vCenter at {host}:{port}: {reason}")


class CertificateUntrusted(VSphereError):
    """The server's TLS certificate is not trusted.

    ``thumbprint`` is the SHA-256 thumbprint the server presented (``AB:CD:...``), so the
    dashboard can show it and offer to trust exactly that certificate. It is ``None`` only
    if the certificate could not be fetched a second time to compute it.
    """

    permanent = True

    def __init__(self, host: str, port: int, thumbprint: str | None, reason: str) -> None:
        self.host = host
        self.port = port
        self.thumbprint = thumbprint
        self.reason = reason
        shown = thumbprint or "unknown"
        super().__init__(
            f"the TLS certificate of {host}:{port} is not trusted ({reason}); "
            f"its SHA-256 thumbprint is {shown}"
        )


class ObjectNotFound(VSphereError):
    """A VM, snapshot or task named by its managed object reference no longer exists."""

    permanent = True

    def __init__(self, moref: str, what: str = "object") -> None:
        self.moref = moref
        super().__init__(f"vCenter has no {what} {moref} (deleted, or never existed)")


class TaskFailed(VSphereError):
    """A vCenter task ended in error. ``fault`` is the vSphere fault type, e.g. ``InvalidState``."""

    def __init__(self, task: str, description: str, message: str, fault: str | None) -> None:
        self.task = task
        self.description = description
        self.message = message
        self.fault = fault
        super().__init__(f"{description} failed: {message} (task {task})")


class TaskTimeout(VSphereError):
    """A task did not finish in time. It may still finish later in vCenter."""

    def __init__(self, task: str, description: str, seconds: float) -> None:
        self.task = task
        self.description = description
        self.seconds = seconds
        super().__init__(
            f"{description} did not finish within {seconds:g} s; "
            f"it may still be running in vCenter (task {task})"
        )


class TaskCancelled(VSphereError):
    """The caller asked to stop waiting; cancellation of the task was requested in vCenter."""

    def __init__(self, task: str, description: str) -> None:
        self.task = task
        self.description = description
        super().__init__(f"{description} was cancelled (task {task})")
