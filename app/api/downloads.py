"""Headers for files the API hands out."""

from __future__ import annotations

import re
from urllib.parse import quote


def attachment(filename: str) -> str:
    """A ``Content-Disposition`` value for ``filename``: an ASCII fallback for old clients and
    the exact name in RFC 5987 form (headers must be latin-1; server and mailbox names are
    not)."""
    fallback = re.sub(r"[^A-Za-z0-9._ -]", "_", filename) or "download"
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{quote(filename, safe='')}"
