"""Sessions with vCenter: TLS trust, login, and the client object the other modules take.

TLS is verified by default against the system's certificate authorities. A vCenter with its
own (VMCA or self-signed) certificate is trusted by pinning: the operator confirms the SHA-256
thumbprint shown by :func:`fetch_thumbprint` (or carried by :class:`CertificateUntrusted`), and
:func:`connect` then accepts exactly the certificate with that thumbprint, checked on every TLS
connection the session opens, and nothing else.

All functions here block (pyVmomi is synchronous); asyncio callers run them in a thread, e.g.
``await asyncio.to_thread(connect, ...)``. A :class:`VSphereClient` may be used from one thread
at a time; give each worker thread its own client.
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import socket
import ssl
import string
from typing import Any
from xml.etree import ElementTree

from pyVim.connect import Connect, Disconnect
from pyVmomi import vim, vmodl
from pyVmomi.VmomiSupport import GetServiceVersions, ManagedObject, versionIdMap

from .errors import AuthenticationFailed, CertificateUntrusted, Unreachable, VSphereError

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT = 30.0
"""Seconds to wait for the TCP connection and for each answer of vCenter."""


def normalize_thumbprint(value: str) -> str:
    """Return a SHA-256 thumbprint as 64 lower-case hex digits.

    Accepts what operators paste: colons or spaces between bytes, any letter case.
    Raises :class:`ValueError` for anything that is not a SHA-256 thumbprint.
    """
    digits = "".join(ch for ch in value.strip() if ch not in ": ").lower()
    if len(digits) != 64 or any(ch not in string.hexdigits for ch in digits):
        raise ValueError(
            f"a SHA-256 thumbprint has 64 hexadecimal digits (colons optional), got {value!r}"
        )
    return digits


def format_thumbprint(digest_hex: str) -> str:
    """Show a thumbprint the way the vSphere Client does: ``AB:CD:...``."""
    digits = normalize_thumbprint(digest_hex).upper()
    return ":".join(digits[i : i + 2] for i in range(0, 64, 2))


def _sha256_thumbprint(der: bytes) -> str:
    return format_thumbprint(hashlib.sha256(der).hexdigest())


def _describe_os_error(exc: BaseException) -> str:
    if isinstance(exc, socket.gaierror):
        return "the host name could not be resolved"
    if isinstance(exc, ConnectionRefusedError):
        return "the connection was refused (nothing listens on that port)"
    if isinstance(exc, (TimeoutError, socket.timeout)):
        return "no answer within the timeout"
    if isinstance(exc, ConnectionResetError):
        return "the connection was reset"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return exc.__class__.__name__


def fetch_thumbprint(host: str, port: int = 443, *, timeout: float = 10.0) -> str:
    """Return the SHA-256 thumbprint (``AB:CD:...``) of the certificate ``host:port`` presents.

    Nothing is verified: this is what the operator is shown before deciding to trust it.
    Raises :class:`Unreachable` when no TLS server answers.
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    try:
        with (
            socket.create_connection((host, port), timeout=timeout) as raw,
            context.wrap_socket(raw, server_hostname=host) as tls,
        ):
            der = tls.getpeercert(binary_form=True)
    except ssl.SSLError as exc:
        raise Unreachable(host, port, f"no TLS server answered ({exc.reason})") from None
    except OSError as exc:
        raise Unreachable(host, port, _describe_os_error(exc)) from None
    if not der:
        raise Unreachable(host, port, "the server presented no certificate")
    return _sha256_thumbprint(der)


class _ThumbprintMismatch(ssl.SSLCertVerificationError):
    def __init__(self, presented: str) -> None:
        super().__init__("certificate does not match the trusted thumbprint")
        self.presented = presented


class _PinnedContext(ssl.SSLContext):
    """A TLS context that accepts exactly one certificate, named by its SHA-256 thumbprint.

    Python's ssl module has no verification callback, so the thumbprint is checked right after
    each handshake, in ``wrap_socket``: every connection pyVmomi's pool opens goes through it.
    (pyVmomi's own ``thumbprint`` option turns verification off for the rest of the session
    after the first connection, so it is not used.)
    """

    pinned: str

    def wrap_socket(self, sock: socket.socket, *args: Any, **kwargs: Any) -> ssl.SSLSocket:
        tls = super().wrap_socket(sock, *args, **kwargs)
        der = tls.getpeercert(binary_form=True)
        presented = hashlib.sha256(der).hexdigest() if der else ""
        if presented != self.pinned:
            tls.close()
            raise _ThumbprintMismatch(format_thumbprint(presented) if presented else "none")
        return tls


def _tls_context(verify_tls: bool, trusted_thumbprint: str | None) -> ssl.SSLContext:
    if trusted_thumbprint:
        context = _PinnedContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE  # replaced by the thumbprint check
        context.pinned = normalize_thumbprint(trusted_thumbprint)
        return context
    if verify_tls:
        # Always an explicit context: pyVmomi turns verification off for "localhost" when it
        # is given none.
        return ssl.create_default_context()
    log.warning("TLS verification is off for this vCenter connection")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def _negotiate_api_version(host: str, port: int, context: ssl.SSLContext, timeout: float) -> str:
    """Pick the newest API version both pyVmomi and the server speak.

    pyVmomi's SmartConnect does the same, but without a timeout on this first request, so a
    server that accepts the connection and never answers would hang the caller.
    """
    conn = http.client.HTTPSConnection(host, port, context=context, timeout=timeout)
    try:
        conn.request("GET", "/sdk/vimServiceVersions.xml")
        response = conn.getresponse()
        body = response.read()
        status = response.status
    finally:
        conn.close()
    if status != 200:
        raise Unreachable(host, port, f"no vSphere API there (HTTP {status} for the API versions)")
    try:
        root = ElementTree.fromstring(body)
    except ElementTree.ParseError:
        raise Unreachable(host, port, "no vSphere API there (unreadable API versions)") from None
    offered: set[str] = set()
    for namespace in root.findall("namespace"):
        if namespace.findtext("name") == "urn:vim25":
            offered.add(namespace.findtext("version") or "")
            offered.update(v.text or "" for v in namespace.findall("priorVersions/version"))
    for version in GetServiceVersions("vim25"):
        if versionIdMap.get(version) in offered:
            return version
    raise VSphereError(
        f"vCenter at {host}:{port} offers API versions {sorted(offered)}, "
        "none of which this Bulwark understands"
    )


class VSphereClient:
    """A logged-in session with one vCenter (or ESXi host).

    Use as a context manager, or call :meth:`close`, to log out.
    """

    def __init__(self, service_instance: Any, host: str, port: int, username: str) -> None:
        self.service_instance = service_instance
        self.content = service_instance.RetrieveContent()
        self.host = host
        self.port = port
        self.username = username

    @property
    def stub(self) -> Any:
        """pyVmomi's SOAP stub, for building managed object references."""
        return self.service_instance._stub

    @property
    def about(self) -> str:
        """Product and version, e.g. ``VMware vCenter Server 8.0.2 build-...``."""
        return str(self.content.about.fullName)

    @property
    def api_version(self) -> str:
        return str(self.content.about.apiVersion)

    def managed_object(self, kind: type, moref: Any) -> Any:
        """A pyVmomi object of type ``kind`` for ``moref`` ("vm-42", or a pyVmomi object)."""
        if isinstance(moref, ManagedObject):
            return moref
        return kind(str(moref), self.stub)

    def close(self) -> None:
        """Log out. Errors are ignored: the session may already be gone."""
        if self.service_instance is None:
            return
        try:
            Disconnect(self.service_instance)
        except Exception:  # noqa: BLE001 - logging out is best effort
            log.debug("logout from %s:%s failed", self.host, self.port, exc_info=True)
        self.service_instance = None

    def __enter__(self) -> VSphereClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"VSphereClient({self.username!r} at {self.host}:{self.port})"


def connect(
    host: str,
    port: int = 443,
    username: str = "",
    password: str = "",
    *,
    verify_tls: bool = True,
    trusted_thumbprint: str | None = None,
    timeout: float = DEFAULT_TIMEOUT,
) -> VSphereClient:
    """Log in to vCenter at ``host:port`` and return a :class:`VSphereClient`.

    TLS: verified against the system's CAs by default. With ``trusted_thumbprint`` (SHA-256,
    colons optional, any case) exactly the certificate with that thumbprint is accepted.
    ``verify_tls=False`` without a thumbprint turns verification off (tests, labs only).

    Raises :class:`AuthenticationFailed`, :class:`Unreachable`, :class:`CertificateUntrusted`
    or :class:`VSphereError`; the password never appears in any of them.
    """
    if trusted_thumbprint is not None:
        try:
            normalize_thumbprint(trusted_thumbprint)
        except ValueError as exc:
            raise VSphereError(str(exc)) from None
    context = _tls_context(verify_tls, trusted_thumbprint)
    try:
        version = _negotiate_api_version(host, port, context, timeout)
        service_instance = Connect(
            host=host,
            port=port,
            user=username,
            pwd=password,
            version=version,
            sslContext=context,
            httpConnectionTimeout=timeout,
        )
        return VSphereClient(service_instance, host, port, username)
    except vim.fault.InvalidLogin:
        raise AuthenticationFailed(host, port, username) from None
    except _ThumbprintMismatch as exc:
        raise CertificateUntrusted(
            host, port, exc.presented, "it does not match the trusted thumbprint"
        ) from None
    except ssl.SSLCertVerificationError as exc:
        reason = exc.verify_message or exc.reason or "verification failed"
        raise CertificateUntrusted(host, port, _thumbprint_or_none(host, port), reason) from None
    except ssl.SSLError as exc:
        raise Unreachable(host, port, f"TLS handshake failed ({exc.reason})") from None
    except OSError as exc:
        raise Unreachable(host, port, _describe_os_error(exc)) from None
    except http.client.HTTPException as exc:
        raise Unreachable(
            host, port, f"the server did not answer as vSphere does ({exc!r})"
        ) from None
    except vmodl.MethodFault as exc:
        raise VSphereError(f"vCenter at {host}:{port} refused the session: {exc.msg}") from None


def _thumbprint_or_none(host: str, port: int) -> str | None:
    try:
        return fetch_thumbprint(host, port)
    except VSphereError:
        return None
