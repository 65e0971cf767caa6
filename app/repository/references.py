"""Chunks needed outside image manifests: garbage collection asks every reference source.

A source is ``fn(session, repository_connection_id) -> Iterable[digest]`` (for example mail
messages stored with ``put_chunk``); garbage collection never removes a digest a source
yields. The sources are a fixed list, ``REQUIRED_SOURCES``: each registers itself when its
module is imported (the composition root imports them), and collection refuses to run while
one of them is missing. Otherwise an entry point that forgot the import would sweep what
the missing source keeps alive (archived mail).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable

from sqlalchemy.orm import Session

ReferenceSource = Callable[[Session, int], Iterable[str]]

# Every source of chunk references besides image manifests, by name: "mail" is the mail
# archive (app/mailboxes/store.py).
REQUIRED_SOURCES: tuple[str, ...] = ("mail",)

_sources: dict[str, ReferenceSource] = {}
_lock = threading.Lock()


def register_reference_source(name: str, fn: ReferenceSource) -> None:
    with _lock:
        _sources[name] = fn


def unregister_reference_source(name: str) -> None:
    with _lock:
        _sources.pop(name, None)


def reference_sources() -> dict[str, ReferenceSource]:
    with _lock:
        return dict(_sources)


def missing_sources() -> list[str]:
    """The required sources not registered in this process."""
    with _lock:
        return [name for name in REQUIRED_SOURCES if name not in _sources]
