"""What the archive catalog and its full-text index keep of one message.

Real mail breaks every rule, so nothing here may raise on what a message holds: a backup
must never fail because of its content. Headers are read raw (compat32's structure parsing
is fast and tolerant, but hands raw 8-bit values back as ``email.header.Header`` objects,
which is where ``.lower()`` and friends broke) and decoded one at a time: RFC 6532 raw
UTF-8 first, the message's charset or cp1252 for other 8-bit bytes, RFC 2047 encoded words
through the modern ``email.policy`` where present. A header that still does not decode is
kept as it came. What went wrong is listed in ``Parsed.problems`` (the job's warnings).
"""

from __future__ import annotations

import email
import email.policy
import html
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.header import decode_header, make_header
from email.message import Message
from email.policy import Compat32
from email.utils import getaddresses, parsedate_to_datetime

# The index keeps the first part of long bodies: a records request finds a message by what
# it is about; the whole message is always in the repository.
MAX_BODY_CHARS = 200_000
# Address headers beyond this are cut before parsing (a To: of 100,000 recipients is kept
# whole in the repository; the catalog keeps its first part).
MAX_ADDRESS_CHARS = 1_000_000
_TAGS = re.compile(r"<(script|style)\b.*?</\1>|<[^>]+>", re.S | re.I)
_SPACE = re.compile(r"\s+")
_SURROGATES = re.compile("[\udc80-\udcff]")
_ADDR_SPEC = re.compile(r"""("[^"\r\n]{0,256}"|[^\s<>,;:"()\[\]]{1,256})@[\w.\-\[\]:]{1,256}""")


class _RawHeaders(Compat32):
    """compat32 that hands headers back as the str it parsed (raw 8-bit bytes as
    surrogates) instead of ``Header`` objects: decoding is this module's job."""

    def header_fetch_parse(self, name, value):
        return value


_RAW = _RawHeaders()


@dataclass
class Parsed:
    message_id: str | None
    subject: str
    sender: str
    recipients: str
    sent_at: datetime | None
    attachments: list[str] = field(default_factory=list)
    body: str = ""
    # What could not be read (a header kept raw, a body part skipped): job warnings.
    problems: list[str] = field(default_factory=list)

    @property
    def people(self) -> str:
        return f"{self.sender} {self.recipients}"


def _unraw(value: str, charset: str | None) -> str:
    """Raw 8-bit bytes (surrogates) to text: UTF-8 (RFC 6532), else the message's charset,
    else cp1252 (what unlabelled 8-bit mail mostly is), else Latin-1 (never fails)."""
    data = value.encode("ascii", "surrogateescape")
    for codec in ("utf-8", charset, "cp1252"):
        if not codec:
            continue
        try:
            return data.decode(codec)
        except (UnicodeDecodeError, LookupError):
            continue
    return data.decode("latin-1")


def _decode(value, charset: str | None = None) -> str:
    """A header value as text; never raises (what does not decode stays as it came)."""
    if value is None:
        return ""
    value = str(value)
    if _SURROGATES.search(value):
        value = _unraw(value, charset)
    if "=?" not in value:
        return value
    if value.isascii():
        try:
            return str(make_header(decode_header(value)))
        except (UnicodeError, LookupError, ValueError, email.errors.HeaderParseError):
            pass
    # Encoded words beside raw non-ASCII text: the modern policy's parser decodes both.
    try:
        return str(email.policy.default.header_factory("subject", value))
    except Exception:  # noqa: BLE001 - any header at all must leave the message indexable
        return value


def _header(msg: Message, name: str, problems: list[str], charset: str | None) -> str:
    try:
        return _decode(msg.get(name), charset)
    except Exception as exc:  # noqa: BLE001
        problems.append(f"{name} kept raw ({type(exc).__name__})")
        return str(msg.get(name) or "")


def _addresses(msg: Message, names: tuple[str, ...], problems: list[str], charset) -> str:
    values = [
        _decode(v, charset)[:MAX_ADDRESS_CHARS] for n in names for v in (msg.get_all(n) or [])
    ]
    try:
        pairs = getaddresses(values)
    except (RecursionError, Exception) as exc:  # noqa: BLE001
        # getaddresses recurses per nested group ("a: b: …"): a huge or broken list is
        # reduced to the addresses found in it.
        problems.append(f"{'/'.join(names)}: addresses read loosely ({type(exc).__name__})")
        pairs = [("", m.group(0)) for v in values for m in _ADDR_SPEC.finditer(v)]
    return ", ".join(f"{name} <{addr}>" if name else addr for name, addr in pairs if addr or name)


def _date(value: str) -> datetime | None:
    if not value:
        return None
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when is None:
        return None
    try:
        return when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)
    except (ValueError, OverflowError):
        return None


def _text(part: Message) -> str:
    payload = part.get_payload(decode=True) or b""
    if not isinstance(payload, bytes):
        return ""
    charset = part.get_content_charset() or "utf-8"
    try:
        text = payload.decode(charset, "replace")
    except (LookupError, ValueError):
        text = payload.decode("utf-8", "replace")
    if part.get_content_subtype() == "html":
        text = html.unescape(_TAGS.sub(" ", text))
    return text


def _charset(msg: Message) -> str | None:
    try:
        charset = msg.get_content_charset()
    except Exception:  # noqa: BLE001
        return None
    return charset if charset and charset not in ("us-ascii", "ascii") else None


def parse(raw: bytes) -> Parsed:
    """Headers, attachment names and text of a message; never raises on its content."""
    try:
        return _parse(raw)
    except Exception as exc:  # noqa: BLE001 - the message is stored whatever this says
        return Parsed(None, "", "", "", None, problems=[f"not parsed ({type(exc).__name__})"])


def _parse(raw: bytes) -> Parsed:
    problems: list[str] = []
    msg = email.message_from_bytes(raw, policy=_RAW)
    charset = _charset(msg)
    attachments: list[str] = []
    texts: list[str] = []
    try:
        _walk(msg, attachments, texts, problems)
    except (RecursionError, Exception) as exc:  # noqa: BLE001
        problems.append(f"body read in part ({type(exc).__name__}: {exc})"[:300])
    body = _SPACE.sub(" ", " ".join(texts)).strip()[:MAX_BODY_CHARS]
    message_id = _SPACE.sub(" ", _header(msg, "Message-ID", problems, charset)).strip() or None
    return Parsed(
        message_id=_clean(message_id[:512]) if message_id else None,
        subject=_clean(_header(msg, "Subject", problems, charset)),
        sender=_clean(_addresses(msg, ("From",), problems, charset)),
        recipients=_clean(_addresses(msg, ("To", "Cc", "Bcc"), problems, charset)),
        sent_at=_date(_header(msg, "Date", problems, charset)),
        attachments=[_clean(a) for a in attachments],
        body=_clean(body),
        problems=problems,
    )


def _clean(text: str) -> str:
    # PostgreSQL text holds no NUL character (a header or a body part may).
    return text.replace("\x00", "") if "\x00" in text else text


def _walk(msg: Message, attachments: list[str], texts: list[str], problems: list[str]) -> None:
    plain_seen = False
    for part in msg.walk():
        if part.is_multipart():
            continue
        try:
            filename = part.get_filename()
        except Exception:  # noqa: BLE001 - a filename parameter nothing can read
            filename = "(unreadable name)"
            problems.append("an attachment name could not be read")
        disposition = str(part.get("Content-Disposition") or "").lower()
        if filename or disposition.startswith("attachment"):
            attachments.append(_decode(filename)[:1000] or "(unnamed)")
            continue
        if part.get_content_maintype() != "text":
            continue
        subtype = part.get_content_subtype()
        if subtype == "html" and plain_seen:
            continue  # the plain alternative already says it
        plain_seen = plain_seen or subtype == "plain"
        try:
            texts.append(_text(part))
        except Exception as exc:  # noqa: BLE001
            problems.append(f"a text part skipped ({type(exc).__name__})")


def message_id_of(raw: bytes) -> str | None:
    """The Message-ID as the restore reads it from the server (``HEADER.FIELDS
    (MESSAGE-ID)``: every such line, UTF-8 with replacement), without parsing the body."""
    head = raw.split(b"\r\n\r\n", 1)[0].split(b"\n\n", 1)[0]
    lines = [line for line in _HEADER_LINES.split(head) if _MESSAGE_ID.match(line)]
    if not lines:
        return None
    _, _, value = b"\r\n".join(lines).decode("utf-8", "replace").partition(":")
    return " ".join(value.split()) or None


_HEADER_LINES = re.compile(rb"\r?\n(?![ \t])")
_MESSAGE_ID = re.compile(rb"message-id[ \t]*:", re.I)
