"""PropertyCollector plumbing shared by the inventory, task and snapshot modules.

Reading vCenter object by object (``vm.name``, ``vm.config`` ...) costs one round trip per
property per object. The PropertyCollector instead answers "these properties of every object
in this container view" in a few large pages. This module holds that pattern once, plus the
translation of pyVmomi's exceptions into this package's errors.
"""

from __future__ import annotations

import http.client
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from typing import Any

from pyVmomi import vim, vmodl

from .errors import ObjectNotFound, Unreachable, VSphereError

PC = vmodl.query.PropertyCollector


def moref_of(obj: Any) -> str | None:
    """The managed object id ("vm-42") of a pyVmomi object, or None."""
    return obj._moId if obj is not None else None


@contextmanager
def translated_faults(client: Any, action: str) -> Iterator[None]:
    """Turn pyVmomi faults and socket errors raised inside into :class:`VSphereError`s."""
    try:
        yield
    except VSphereError:
        raise
    except vmodl.fault.ManagedObjectNotFound as exc:
        raise ObjectNotFound(moref_of(exc.obj) or "?", "object") from None
    except vim.fault.NotAuthenticated:
        raise VSphereError(
            f"{action} failed: the vCenter session has ended; connect again"
        ) from None
    except vmodl.MethodFault as exc:
        message = exc.msg or type(exc).__name__.rsplit(".", 1)[-1]
        raise VSphereError(f"{action} failed: {message}") from None
    except (OSError, http.client.HTTPException) as exc:
        raise Unreachable(
            client.host, client.port, f"connection lost during {action} ({exc!r})"
        ) from None


def container_view(client: Any, types: Sequence[type], root: Any = None) -> Any:
    """A recursive ContainerView over ``types`` below ``root`` (the root folder by default)."""
    content = client.content
    return content.viewManager.CreateContainerView(root or content.rootFolder, list(types), True)


def view_filter(
    client: Any, types: Mapping[type, Sequence[str]], root: Any = None
) -> tuple[Any, Any]:
    """A container view over ``types`` and the filter spec reading ``paths`` of each type."""
    view = container_view(client, list(types), root)
    traverse = PC.TraversalSpec(name="view", type=vim.view.ContainerView, path="view", skip=False)
    spec = PC.FilterSpec(
        objectSet=[PC.ObjectSpec(obj=view, skip=True, selectSet=[traverse])],
        propSet=[PC.PropertySpec(type=t, pathSet=list(paths)) for t, paths in types.items()],
    )
    return view, spec


def retrieve_view_pages(
    client: Any,
    types: Mapping[type, Sequence[str]],
    page_size: int,
    root: Any = None,
) -> Iterator[list[Any]]:
    """Yield pages of ``ObjectContent`` for every object of ``types`` (type -> property paths).

    One container view, one RetrievePropertiesEx, then ContinueRetrievePropertiesEx for as long
    as vCenter hands back a token. Only one page is held at a time; the view is destroyed (and
    an unfinished result cancelled) even if the caller stops early.
    """
    if page_size < 1:
        raise ValueError("page_size must be at least 1")
    collector = client.content.propertyCollector
    view, spec = view_filter(client, types, root)
    token = None
    try:
        result = collector.RetrievePropertiesEx([spec], PC.RetrieveOptions(maxObjects=page_size))
        while result is not None:
            token = result.token
            yield list(result.objects)
            if not token:
                break
            result = collector.ContinueRetrievePropertiesEx(token)
            token = None
    finally:
        release(client, view, token)


def release(client: Any, view: Any, token: str | None) -> None:
    """Cancel an unfinished paged result and destroy the view; both are best effort (a
    result expires on its own, a view ends with the session)."""
    if token:
        with suppress(Exception):
            client.content.propertyCollector.CancelRetrievePropertiesEx(token)
    with suppress(Exception):
        view.DestroyView()


def retrieve_one(client: Any, obj: Any, kind: type, paths: Iterable[str]) -> dict[str, Any]:
    """Properties ``paths`` of one object, in one round trip; unset properties are left out."""
    spec = PC.FilterSpec(
        objectSet=[PC.ObjectSpec(obj=obj, skip=False)],
        propSet=[PC.PropertySpec(type=kind, pathSet=list(paths))],
    )
    result = client.content.propertyCollector.RetrievePropertiesEx([spec], PC.RetrieveOptions())
    if result is None or not result.objects:
        raise ObjectNotFound(moref_of(obj) or "?", kind.__name__.rsplit(".", 1)[-1])
    return props(result.objects[0])


def props(content: Any) -> dict[str, Any]:
    """The properties of one ``ObjectContent`` as a dict (missing ones left out)."""
    return {p.name: p.val for p in content.propSet}
