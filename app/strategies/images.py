"""Images a strategy writes into a repository: saving one as this job's leftover until the
catalog names it, and removing one an interrupted run left uncataloged (VM images and array
volumes alike)."""

from __future__ import annotations

from typing import Any

from app.domain.protection import CopyLocation
from app.repository.manifest import new_manifest_id
from app.strategies.base import BackupRun, StepContext, StrategyServices

LEFTOVER = "repository_image"


def save_image(run: BackupRun, repo: Any, manifest: Any, repository_id: int) -> str:
    """Make the image durable; until the catalog names it, it is this job's leftover."""
    manifest.id = manifest.id or new_manifest_id(manifest.created_at)
    try:
        # Recorded first: a crash between saving and cataloging still names the image.
        run.ctx.add_leftover(
            {"kind": LEFTOVER, "repository_id": repository_id, "manifest_id": manifest.id}
        )
        return repo.save_manifest(manifest)
    except BaseException:
        repo.abandon(manifest)
        raise


def remove_uncataloged(services: StrategyServices, ctx: StepContext, item: dict[str, Any]) -> None:
    """Remove the image a leftover names, unless the catalog names it (then it is a restore
    point's copy, not a leftover)."""
    if services.cataloged(CopyLocation.REPOSITORY, item["manifest_id"]):
        return
    services.open_repository(item["repository_id"]).delete_manifest(item["manifest_id"])
    ctx.event(
        f"removed image {item['manifest_id']} an interrupted run left uncataloged", step="cleanup"
    )
