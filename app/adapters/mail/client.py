"""One IMAP session opening one user's mailbox as the service account."""

from __future__ import annotations

import contextlib
import hashlib
import imaplib
import logging
import re
import ssl
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Literal

from imapclient import IMAPClient
from imapclient.exceptions import IMAPClientError, LoginError
from imapclient.response_parser import parse_fetch_response

from .errors import AuthenticationFailed, CertificateUntrusted, MailError, Unreachable

TlsMode = Literal["tls", "starttls", "none"]
LoginMode = Literal["master_user", "authzid"]
# Flags a client may not set with APPEND (the server owns them).
SERVER_FLAGS = {"\\Recent"}
# One FETCH of new messages holds at most this many messages and bytes (bounded memory).
BATCH_COUNT = 250
BATCH_BYTES = 32 * 1024 * 1024
# Messages up to this size are not sized one by one: BATCH_COUNT of them fit in BATCH_BYTES.
SIZED_FROM = BATCH_BYTES // BATCH_COUNT


@dataclass(frozen=True)
class MailAccount:
    """Where the mail server is and how the service account signs in.

    ``login="master_user"`` signs in as ``<mailbox><separator><account>`` (Dovecot master
    users); ``login="authzid"`` uses SASL PLAIN with the mailbox as authorization identity
    (Exchange full-access accounts, and Dovecot too).
    """

    host: str
    port: int
    username: str
    password: str = field(repr=False)
    tls: TlsMode = "starttls"
    verify_tls: bool = True
    trusted_thumbprint: str | None = None
    login: LoginMode = "master_user"
    master_separator: str = "*"
    cafile: str | None = None
    timeout: float = 60.0


@dataclass(frozen=True)
class FolderInfo:
    name: str
    delimiter: str
    flags: tuple[str, ...]

    @property
    def selectable(self) -> bool:
        return "\\Noselect" not in self.flags and "\\NonExistent" not in self.flags


@dataclass(frozen=True)
class FolderState:
    uidvalidity: int
    uidnext: int
    exists: int
    highestmodseq: int | None  # None when the server does not offer CONDSTORE


@dataclass
class FetchedMessage:
    uid: int
    raw: bytes
    flags: list[str]
    internal_date: datetime
    modseq: int | None = None


# The FETCH responses a backup reads are all alike: ``<seq> (UID n FLAGS (...) INTERNALDATE
# "..." [MODSEQ (n)] BODY[] {size}`` and the literal, in whatever order the server puts the
# small items before the body. Read with two regexes instead of IMAPClient's byte-by-byte
# lexer (a third of the client's CPU per message); any other shape goes to IMAPClient.
_FETCH_HEAD = re.compile(
    rb'\d+ \(((?:(?:UID \d+|FLAGS \([^()"{}]*\)|INTERNALDATE "[^"]*"|MODSEQ \(\d+\)) )*)'
    rb"BODY\[\] \{\d+\}"
)
_FETCH_ITEM = re.compile(
    rb'UID (\d+)|FLAGS \(([^()"{}]*)\)|INTERNALDATE "([^"]*)"|MODSEQ \((\d+)\)'
)
_INTERNALDATE = re.compile(
    rb" ?(\d{1,2})-([A-Z][a-z]{2})-(\d{4}) (\d\d):(\d\d):(\d\d) ([+-])(\d\d)(\d\d)"
)
_MONTHS = {
    m.encode(): i
    for i, m in enumerate(
        ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"), 1
    )
}
_ZONES: dict[bytes, timezone] = {}


def _internaldate(value: bytes) -> datetime:
    """An INTERNALDATE in the server's zone (as IMAPClient's ``normalise_times=False``)."""
    m = _INTERNALDATE.fullmatch(value)
    if m is None or m[2] not in _MONTHS:
        from imapclient.datetime_util import parse_to_datetime

        return parse_to_datetime(value, normalise=False)
    day, month, year, hh, mm, ss, sign, zh, zm = m.groups()
    zone = _ZONES.get(value[-5:])
    if zone is None:
        offset = timedelta(hours=int(zh), minutes=int(zm))
        zone = _ZONES.setdefault(value[-5:], timezone(-offset if sign == b"-" else offset))
    return datetime(int(year), _MONTHS[month], int(day), int(hh), int(mm), int(ss), tzinfo=zone)


def _parse_bodies(data: list) -> dict[int, tuple[bytes, list[str], datetime, int | None]] | None:
    """UID -> (body, flags, internal date, modseq) from a FETCH of BODY.PEEK[] FLAGS
    INTERNALDATE [MODSEQ]; None when a response has another shape (IMAPClient parses it)."""
    out = {}
    n = len(data)
    i = 0
    while i < n:
        item = data[i]
        if not (isinstance(item, tuple) and len(item) == 2 and i + 1 < n and data[i + 1] == b")"):
            return None
        head = _FETCH_HEAD.fullmatch(item[0])
        if head is None:
            return None
        uid = when = modseq = None
        flags: list[str] = []
        for u, f, d, ms in _FETCH_ITEM.findall(head[1]):
            if u:
                uid = int(u)
            elif d:
                when = _internaldate(d)
            elif ms:
                modseq = int(ms)
            else:
                flags = sorted(x for x in f.decode().split() if x not in SERVER_FLAGS)
        if uid is None or when is None:
            return None
        out[uid] = (item[1], flags, when, modseq)
        i += 2
    return out


def _thumbprint_hex(value: str) -> str:
    return value.replace(":", "").strip().lower()


def _context(account: MailAccount) -> ssl.SSLContext:
    if account.verify_tls and not account.trusted_thumbprint:
        return ssl.create_default_context(cafile=account.cafile)
    # Pinned (or explicitly unverified): the certificate is checked by thumbprint after the
    # handshake, because Python's ssl has no verification callback. A bare client context:
    # loading the system's CA store (~20 ms a connection) would serve nothing here.
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def _check_pin(client: IMAPClient, account: MailAccount) -> None:
    if not account.trusted_thumbprint:
        return
    der = client.socket().getpeercert(binary_form=True) or b""
    presented = hashlib.sha256(der).hexdigest()
    if presented != _thumbprint_hex(account.trusted_thumbprint):
        raise CertificateUntrusted(
            f"{account.host}:{account.port} presented a certificate with thumbprint "
            f"{presented}, not the trusted one",
            thumbprint=presented,
        )


def _flags(raw: Iterable[bytes | str]) -> list[str]:
    """Stored flags; \\Recent belongs to one session, not to the message."""
    flags = (f.decode() if isinstance(f, bytes) else f for f in raw)
    return sorted(f for f in flags if f not in SERVER_FLAGS)


class MailSession:
    """A signed-in IMAP session for one mailbox. Use :func:`connect`."""

    def __init__(self, client: IMAPClient, mailbox: str):
        self.client = client
        self.mailbox = mailbox
        caps = {c.decode().upper() for c in client.capabilities()}
        self.capabilities = frozenset(caps)
        self.condstore = "CONDSTORE" in caps or "QRESYNC" in caps
        self.qresync = "QRESYNC" in caps
        self.multiappend = "MULTIAPPEND" in caps
        self._selected: str | None = None
        self._count = 0
        self._readonly = True
        if self.qresync:
            client.enable("QRESYNC")
        elif self.condstore:
            client.enable("CONDSTORE")

    # -- folders --------------------------------------------------------------------------

    def folders(self) -> list[FolderInfo]:
        out = []
        for flags, delimiter, name in self.client.list_folders():
            delim = delimiter.decode() if isinstance(delimiter, bytes) else (delimiter or "/")
            out.append(FolderInfo(name, delim, tuple(_flags(flags))))
        return out

    def delimiter(self) -> str:
        folders = self.folders()
        return folders[0].delimiter if folders else "/"

    def ensure_folder(self, name: str) -> None:
        if not self.client.folder_exists(name):
            try:
                self.client.create_folder(name)
            except IMAPClientError as exc:
                if not self.client.folder_exists(name):
                    raise MailError(f"cannot create folder '{name}': {exc}") from exc

    def examine(self, folder: str) -> FolderState:
        """Select read-only (EXAMINE): nothing Bulwark does can change flags, \\Seen least."""
        resp = self.client.select_folder(folder, readonly=True)
        self._selected, self._readonly = folder, True
        self._count = int(resp.get(b"EXISTS", 0))
        modseq = resp.get(b"HIGHESTMODSEQ")
        return FolderState(
            uidvalidity=int(resp[b"UIDVALIDITY"]),
            uidnext=int(resp.get(b"UIDNEXT", 0)),
            exists=int(resp.get(b"EXISTS", 0)),
            highestmodseq=int(modseq) if modseq is not None and self.condstore else None,
        )

    def select(self, folder: str) -> FolderState:
        resp = self.client.select_folder(folder, readonly=False)
        self._selected, self._readonly = folder, False
        self._count = int(resp.get(b"EXISTS", 0))
        return FolderState(
            int(resp[b"UIDVALIDITY"]),
            int(resp.get(b"UIDNEXT", 0)),
            int(resp.get(b"EXISTS", 0)),
            None,
        )

    # -- reading --------------------------------------------------------------------------

    def uids(self) -> list[int]:
        """Every UID in the selected folder (the sweep servers without QRESYNC need)."""
        return sorted(self.client.search("ALL"))

    def sizes_after(self, highest_uid: int) -> dict[int, int]:
        """Messages with a UID above ``highest_uid`` and a bound on their size: RFC822.SIZE
        for those larger than :data:`SIZED_FROM`, ``SIZED_FROM`` for the rest.

        Two SEARCHes answer in one line each, where a FETCH of every size costs a parsed
        response line per message; :func:`iter_batches` only needs the bound (a full batch
        of small messages stays within its byte limit).
        """
        above = ["UID", f"{highest_uid + 1}:*"]
        # "n:*" also names the last message when n is above every UID: filter it out.
        uids = [uid for uid in self.client.search(above) if uid > highest_uid]
        sizes = dict.fromkeys(uids, SIZED_FROM)
        large = [u for u in self.client.search([*above, "LARGER", str(SIZED_FROM)]) if u in sizes]
        if large:
            found = self.client.fetch(large, ["RFC822.SIZE"])
            sizes.update({uid: int(d[b"RFC822.SIZE"]) for uid, d in found.items() if uid in sizes})
        return sizes

    def fetch(self, uids: Sequence[int]) -> list[FetchedMessage]:
        """Whole messages with BODY.PEEK[] (never sets \\Seen), flags and internal date."""
        if not uids:
            return []
        items = "(BODY.PEEK[] FLAGS INTERNALDATE MODSEQ)" if self.condstore else None
        items = items or "(BODY.PEEK[] FLAGS INTERNALDATE)"
        # IMAPClient.fetch's own steps, with the fast reading of the responses.
        imap = self.client._imap
        tag = imap._command("UID", "FETCH", _uid_set(uids), items)
        typ, data = imap._command_complete("FETCH", tag)
        self.client._checkok("fetch", typ, data)
        typ, data = imap._untagged_response(typ, data, "FETCH")
        data = [d for d in data if d is not None]
        fast = _parse_bodies(data)
        if fast is not None:
            return [FetchedMessage(uid, *fast[uid]) for uid in uids if uid in fast]
        parsed = parse_fetch_response(data, self.client.normalise_times, True)
        out = []
        for uid in uids:
            d = parsed.get(uid)
            if d is None or b"BODY[]" not in d:
                continue  # expunged while we were fetching
            modseq = d.get(b"MODSEQ")
            out.append(
                FetchedMessage(
                    uid,
                    d[b"BODY[]"],
                    _flags(d.get(b"FLAGS", ())),
                    d[b"INTERNALDATE"],
                    int(modseq[0]) if modseq else None,
                )
            )
        return out

    def all_flags(self) -> dict[int, list[str]]:
        data = self.client.fetch("1:*", ["FLAGS"]) if self._exists() else {}
        return {uid: _flags(d.get(b"FLAGS", ())) for uid, d in data.items()}

    def changes_since(self, modseq: int, highest_uid: int) -> tuple[dict[int, list[str]], set[int]]:
        """Flags changed since ``modseq`` (CONDSTORE) and, with QRESYNC, the UIDs expunged
        since then (VANISHED (EARLIER)); without QRESYNC the second set is empty and the
        caller sweeps UIDs when the counts disagree."""
        if highest_uid <= 0:
            return {}, set()
        modifiers = [f"CHANGEDSINCE {modseq}"]
        if self.qresync:
            modifiers = [f"CHANGEDSINCE {modseq} VANISHED"]
        self.client._imap.untagged_responses.pop("VANISHED", None)
        data = self.client.fetch(f"1:{highest_uid}", ["FLAGS"], modifiers=modifiers)
        vanished: set[int] = set()
        for line in self.client._imap.untagged_responses.pop("VANISHED", []) or []:
            text = line.decode() if isinstance(line, bytes) else str(line)
            vanished |= _parse_uid_set(text.replace("(EARLIER)", "").strip())
        flags = {uid: _flags(d.get(b"FLAGS", ())) for uid, d in data.items() if uid <= highest_uid}
        return flags, vanished

    def message_ids(self) -> dict[int, tuple[str | None, int]]:
        """Message-ID header and size of every message in the selected folder."""
        if not self._exists():
            return {}
        data = self.client.fetch("1:*", ["BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)]", "RFC822.SIZE"])
        out = {}
        for uid, d in data.items():
            header = next((v for k, v in d.items() if k.startswith(b"BODY[HEADER")), b"")
            out[uid] = (_message_id(header), int(d.get(b"RFC822.SIZE", 0)))
        return out

    def bodies(self, uids: Sequence[int]) -> dict[int, bytes]:
        if not uids:
            return {}
        data = self.client.fetch(list(uids), ["BODY.PEEK[]"])
        return {uid: d[b"BODY[]"] for uid, d in data.items() if b"BODY[]" in d}

    def _exists(self) -> bool:
        return self._count > 0

    # -- writing --------------------------------------------------------------------------

    def append(self, folder: str, messages: Sequence[tuple[bytes, list[str], datetime]]) -> None:
        """Append with flags and internal dates kept; MULTIAPPEND when offered (one command
        for a batch), one APPEND each otherwise (Exchange)."""
        if not messages:
            return
        clean = [
            (raw, [f for f in flags if f not in SERVER_FLAGS], when)
            for raw, flags, when in messages
        ]
        try:
            if self.multiappend and len(clean) > 1:
                self.client.multiappend(
                    folder,
                    [{"msg": raw, "flags": flags, "date": when} for raw, flags, when in clean],
                )
            else:
                for raw, flags, when in clean:
                    self.client.append(folder, raw, flags, when)
        except IMAPClientError as exc:
            raise MailError(f"appending to '{folder}' of {self.mailbox} failed: {exc}") from exc

    def close(self) -> None:
        try:
            self.client.logout()
        except Exception:  # noqa: BLE001 - the session is going away either way
            with contextlib.suppress(Exception):
                self.client.shutdown()

    def __enter__(self) -> MailSession:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _message_id(header: bytes) -> str | None:
    text = header.decode("utf-8", "replace")
    _, _, value = text.partition(":")
    value = " ".join(value.split())
    return value or None


def _uid_set(uids: Sequence[int]) -> str:
    """``1:250`` for a run of consecutive UIDs (the common case: a short command line)."""
    parts = []
    start = prev = None
    for uid in sorted(uids):
        if prev is not None and uid == prev + 1:
            prev = uid
            continue
        if start is not None:
            parts.append(f"{start}:{prev}" if prev != start else str(start))
        start = prev = uid
    if start is not None:
        parts.append(f"{start}:{prev}" if prev != start else str(start))
    return ",".join(parts)


def _parse_uid_set(text: str) -> set[int]:
    out: set[int] = set()
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        if ":" in part:
            a, b = part.split(":", 1)
            lo, hi = sorted((int(a), int(b)))
            out.update(range(lo, hi + 1))
        else:
            out.add(int(part))
    return out


def connect(account: MailAccount, mailbox: str | None = None) -> MailSession:
    """Sign in to ``mailbox`` (or the account's own) as the service account."""
    try:
        if account.tls == "tls":
            client = IMAPClient(
                account.host,
                account.port,
                ssl=True,
                ssl_context=_context(account),
                timeout=account.timeout,
            )
            _check_pin(client, account)
        else:
            client = IMAPClient(account.host, account.port, ssl=False, timeout=account.timeout)
            if account.tls == "starttls":
                client.starttls(_context(account))
                _check_pin(client, account)
    except ssl.SSLCertVerificationError as exc:
        raise CertificateUntrusted(
            f"{account.host}:{account.port} presented an untrusted certificate: "
            f"{exc.verify_message}"
        ) from exc
    except (TimeoutError, OSError, IMAPClientError, imaplib.IMAP4.error) as exc:
        raise Unreachable(f"cannot reach {account.host}:{account.port}: {exc}") from exc
    client.normalise_times = False  # keep the server's zone: restores must keep dates exact
    if not logging.getLogger("imapclient.imaplib").isEnabledFor(logging.DEBUG):
        # IMAPClient turns imaplib's debug output on and sends it to that logger; imaplib then
        # formats the repr of every response, whole messages included, before the logger
        # drops it (more than half the client's CPU per fetched message).
        client._imap.debug = 0
    try:
        if mailbox is None or mailbox == account.username:
            client.login(account.username, account.password)
        elif account.login == "authzid":
            client.plain_login(account.username, account.password, authorization_identity=mailbox)
        else:
            client.login(f"{mailbox}{account.master_separator}{account.username}", account.password)
    except (LoginError, IMAPClientError, imaplib.IMAP4.error) as exc:
        client.shutdown()
        who = f"mailbox '{mailbox}' as {account.username}" if mailbox else account.username
        raise AuthenticationFailed(f"{account.host} refused to sign in to {who}: {exc}") from exc
    try:
        return MailSession(client, mailbox or account.username)
    except IMAPClientError as exc:
        client.shutdown()
        raise MailError(str(exc)) from exc


def iter_batches(
    sizes: dict[int, int], *, max_count: int = BATCH_COUNT, max_bytes: int = BATCH_BYTES
) -> Iterator[list[int]]:
    """UIDs in order, grouped so one FETCH holds at most ``max_count`` messages or
    ``max_bytes`` (bounded memory however large the messages are)."""
    batch: list[int] = []
    total = 0
    for uid in sorted(sizes):
        size = sizes[uid]
        if batch and (len(batch) >= max_count or total + size > max_bytes):
            yield batch
            batch, total = [], 0
        batch.append(uid)
        total += size
    if batch:
        yield batch
