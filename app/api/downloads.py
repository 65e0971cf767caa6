"""Headers for files the API hands out."""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from urllib.parse import quote


def attachment(filename: str) -> str:
    """A ``Content-Disposition`` value for ``filename``: an ASCII fallback for old clients and
    the exact name in RFC 5987 form (headers must be latin-1; server and mailbox names are
    not)."""
    fallback = re.sub(r"[^A-Za-z0-9._ -]", "_", filename) or "download"
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{quote(filename, safe='')}"


def octets(chunks: Iterable) -> Iterator[bytes | memoryview]:
    """``chunks`` as types a ``StreamingResponse`` sends as they are.

    The repository hands out blocks as any bytes-like object (an encrypted block stored
    uncompressed opens into a ``bytearray``, no copy); Starlette would call ``.encode()`` on
    anything but ``bytes`` or ``memoryview`` and break the transfer after its 200. A view
    costs no copy.
    """
    for chunk in chunks:
        yield chunk if isinstance(chunk, bytes | memoryview) else memoryview(chunk)
