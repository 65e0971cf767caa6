"""What the archive catalog and its full-text index keep of one message."""

from __future__ import annotations

import email
import email.policy
import html
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.header import decode_header, make_header
from email.message import Message
from email.utils import getaddresses, parsedate_to_datetime

# The index keeps the first part of long bodies: a records request finds a message by what
# it is about; the whole message is always in the repository.
MAX_BODY_CHARS = 200_000
_TAGS = re.compile(r"<(script|style)\b.*?</\1>|<[^>]+>", re.S | re.I)
_SPACE = re.compile(r"\s+")


@dataclass
class Parsed:
    message_id: str | None
    subject: str
    sender: str
    recipients: str
    sent_at: datetime | None
    attachments: list[str] = field(default_factory=list)
    body: str = ""

    @property
    def people(self) -> str:
        return f"{self.sender} {self.recipients}"


def _decode(value: str | None) -> str:
    """RFC 2047 encoded words to text; broken encodings degrade to what can be read."""
    if not value:
        return ""
    try:
        return str(make_header(decode_header(value)))
    except (UnicodeError, LookupError, ValueError, email.errors.HeaderParseError):
        return value


def _addresses(msg: Message, *names: str) -> str:
    values = [_decode(v) for n in names for v in (msg.get_all(n) or [])]
    pairs = getaddresses(values)
    return ", ".join(f"{name} <{addr}>" if name else addr for name, addr in pairs if addr or name)


def _date(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    return when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)


def _text(part: Message) -> str:
    payload = part.get_payload(decode=True) or b""
    charset = part.get_content_charset() or "utf-8"
    try:
        text = payload.decode(charset, "replace")
    except LookupError:
        text = payload.decode("utf-8", "replace")
    if part.get_content_subtype() == "html":
        text = html.unescape(_TAGS.sub(" ", text))
    return text


def parse(raw: bytes) -> Parsed:
    """Headers, attachment names and text of a message (compat32 parsing: fast, tolerant)."""
    msg = email.message_from_bytes(raw)
    attachments: list[str] = []
    texts: list[str] = []
    plain_seen = False
    for part in msg.walk():
        if part.is_multipart():
            continue
        filename = part.get_filename()
        disposition = (part.get("Content-Disposition") or "").lower()
        if filename or disposition.startswith("attachment"):
            attachments.append(_decode(filename) or "(unnamed)")
            continue
        if part.get_content_maintype() != "text":
            continue
        subtype = part.get_content_subtype()
        if subtype == "html" and plain_seen:
            continue  # the plain alternative already says it
        plain_seen = plain_seen or subtype == "plain"
        texts.append(_text(part))
    body = _SPACE.sub(" ", " ".join(texts)).strip()[:MAX_BODY_CHARS]
    message_id = (msg.get("Message-ID") or "").strip() or None
    return Parsed(
        message_id=message_id[:512] if message_id else None,
        subject=_decode(msg.get("Subject")),
        sender=_addresses(msg, "From"),
        recipients=_addresses(msg, "To", "Cc", "Bcc"),
        sent_at=_date(msg.get("Date")),
        attachments=attachments,
        body=body,
    )


def message_id_of(raw: bytes) -> str | None:
    """The Message-ID header only, without parsing the body (for restore matching)."""
    head = raw.split(b"\r\n\r\n", 1)[0].split(b"\n\n", 1)[0]
    msg = email.message_from_bytes(head + b"\r\n\r\n")
    value = " ".join((msg.get("Message-ID") or "").split())
    return value or None
