"""What the backup handler hands a strategy (``StrategyServices`` in app.strategies.base):
catalog queries, opening the policy's repository and an array, finding a database's LUNs,
and the one primary-retention rule. Strategies see plain values, never a database session."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy import select

from app.adapters import arrays
from app.db.models import Connection, ExchangeDatabase, ExchangeServer, RestorePointCopy
from app.domain.protection import CopyLocation, ProtectionMethod
from app.jobs.context import JobContext, PermanentError
from app.protection.bindings.arrays import (
    DatabaseVolumes,
    VolumesNotFound,
    database_volumes,
    open_driver,
)
from app.protection.catalog import retention
from app.protection.catalog.points import ANY, recent_points
from app.repository.connection import open_job_repository
from app.strategies.base import CopyMade, PointView, PrimaryCopy, TargetSpec, VCenterAccess


class JobStrategyServices:
    def __init__(self, ctx: JobContext, vcenter: VCenterAccess) -> None:
        self._ctx = ctx
        self.vcenter = vcenter
        self._arrays: dict[int, arrays.ArrayDriver] = {}

    # -- catalog ----------------------------------------------------------------------------
    def recent_points(
        self,
        target: TargetSpec,
        method: ProtectionMethod,
        *,
        policy_id: int | None = None,
        whole_server: bool = False,
        limit: int = 5,
    ) -> list[PointView]:
        with self._ctx.db.session() as session:
            points = recent_points(
                session,
                server_id=target.server_id,
                database_id=ANY if whole_server else target.database_id,
                policy_id=policy_id,
                method=method,
                limit=limit,
            )
            return [
                PointView(
                    p.id,
                    dict(p.details or {}),
                    tuple(
                        CopyMade(c.location, c.reference, c.connection_id, c.size_bytes)
                        for c in p.live_copies()
                    ),
                )
                for p in points
            ]

    def cataloged(
        self, location: CopyLocation, reference: str, connection_id: int | None = None
    ) -> bool:
        """Does the catalog name this copy (live or removed)? Then it is no job's leftover."""
        query = select(RestorePointCopy.id).where(
            RestorePointCopy.location == location, RestorePointCopy.reference == reference
        )
        if connection_id is not None:
            query = query.where(RestorePointCopy.connection_id == connection_id)
        with self._ctx.db.session() as session:
            return session.scalar(query.limit(1)) is not None

    def retain_on_primary(
        self,
        policy_id: int,
        target: TargetSpec,
        location: CopyLocation,
        keep: int,
        remove: Callable[[PrimaryCopy], bool],
    ) -> list[int]:
        return retention.retain_on_primary(
            self._ctx.db,
            policy_id=policy_id,
            server_id=target.server_id,
            database_id=target.database_id,
            location=location,
            keep=keep,
            remove=remove,
        )

    # -- adapters ---------------------------------------------------------------------------
    def open_repository(self, repository_id: int) -> Any:
        return open_job_repository(self._ctx, repository_id)

    def open_array(self, connection_id: int) -> arrays.ArrayDriver:
        if connection_id not in self._arrays:
            with self._ctx.db.session() as session:
                conn = session.get(Connection, connection_id)
                if conn is None:
                    raise arrays.ArrayUnavailable(f"array connection {connection_id} was removed")
                self._arrays[connection_id] = open_driver(conn)
        return self._arrays[connection_id]

    def database_volumes(self, target: TargetSpec) -> DatabaseVolumes:
        """Where the target database's LUNs are on an array (a permanent error if nowhere)."""
        with self._ctx.db.session() as session:
            server = session.get(ExchangeServer, target.server_id)
            database = session.get(ExchangeDatabase, target.database_id)
            if server is None or database is None:
                raise PermanentError("the server or database was removed before the backup ran")
            try:
                return database_volumes(session, server, database)
            except VolumesNotFound as exc:
                raise PermanentError(str(exc)) from exc
