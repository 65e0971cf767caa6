"""Chunks needed outside image manifests: garbage collection asks every registered source.

A source is ``fn(session, repository_connection_id) -> Iterable[digest]`` (for example mail
messages stored with ``put_chunk``). Garbage collection never removes a digest a source
yields, so a source must be registered by importing its module before collection runs.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable

from sqlalchemy.orm import Session

ReferenceSource = Callable[[Session, int], Iterable[str]]

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
