"""Generated mail for the tests and the benchmark: plain and multipart messages with
attachments, RFC 2047 encoded non-ASCII headers, and large messages."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from email.headerregistry import Address
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import format_datetime, make_msgid

_TEXT = """quarterly budget merger audit contract invoice shipment meeting schedule review
Exchange server database backup restore mailbox compliance retention records
Zürich Köln café naïve résumé Ångström"""
WORDS = _TEXT.split()
_SYLLABLES = list("karitomelusanovideraoki")
# A larger made-up vocabulary, used with a Zipf-like skew like real text: some words are in
# most messages, most words in few (so searches select like real ones do).
VOCABULARY = WORDS + sorted(
    {"".join(random.Random(i).choices(_SYLLABLES, k=6)) for i in range(4000)}
)


def _words(rng: random.Random, count: int) -> str:
    n = len(VOCABULARY)
    return " ".join(
        VOCABULARY[min(n - 1, int(rng.paretovariate(1.1)) - 1)]
        if rng.random() < 0.5
        else VOCABULARY[rng.randrange(n)]
        for _ in range(count)
    )


def message(
    n: int,
    *,
    sender: str = "alice@example.com",
    to: str = "bob@example.com",
    subject: str | None = None,
    body: str | None = None,
    attachment: bytes | None = None,
    attachment_name: str = "report.pdf",
    size: int = 0,
    when: datetime | None = None,
    seed: int | None = None,
) -> bytes:
    """One RFC 5322 message; ``size`` pads the body (for large messages)."""
    rng = random.Random(seed if seed is not None else n)
    msg = EmailMessage()
    msg["From"] = Address("Ålice Ørsted" if n % 3 == 0 else "Alice", addr_spec=sender)
    msg["To"] = to
    msg["Subject"] = subject or f"{rng.choice(WORDS)} {rng.choice(WORDS)} Nr. {n} – Grüße"
    msg["Date"] = format_datetime(when or datetime(2026, 1, 1, tzinfo=UTC) + timedelta(minutes=n))
    msg["Message-ID"] = make_msgid(idstring=f"m{n}x{rng.randrange(1 << 30)}", domain="example.com")
    text = body or _words(rng, 40)
    if size > len(text):
        filler = _words(rng, size // 6)
        text = f"{text}\n{filler}"[:size]
    msg.set_content(text)
    if attachment is not None:
        msg.add_attachment(
            attachment, maintype="application", subtype="octet-stream", filename=attachment_name
        )
    return msg.as_bytes(policy=SMTP)  # CRLF, as IMAP servers keep it
