"""API tokens for other systems: shown once, stored hashed, revocable, expiring."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Response
from sqlalchemy import select

from app.accounts import AccountError, create_token
from app.api import API_PREFIX
from app.api.deps import CurrentPrincipal, DbSession
from app.api.pagination import Page, PageWindow, paginate
from app.api.problems import Problem, invalid, not_found
from app.api.schemas.users import TokenCreate, TokenCreated, TokenOut
from app.audit import record
from app.db.models import ApiToken, User
from app.db.types import utcnow
from app.security.roles import Permission

router = APIRouter(prefix=API_PREFIX + "/tokens", tags=["api tokens"])


@router.get("", response_model=Page[TokenOut], summary="List API tokens (yours; admins: all)")
def list_tokens(
    session: DbSession,
    principal: CurrentPrincipal,
    user_id: int | None = None,
    active: bool | None = None,
    window: PageWindow = Depends(),
):
    query = select(ApiToken)
    if not principal.can(Permission.MANAGE_USERS):
        user_id = principal.user_id
    if user_id is not None:
        query = query.where(ApiToken.user_id == user_id)
    if active:
        query = query.where(ApiToken.revoked_at.is_(None))
    return paginate(
        session,
        query,
        window,
        None,
        sortable={"created_at": ApiToken.created_at},
        default_sort="-created_at",
    )


@router.post(
    "",
    response_model=TokenCreated,
    status_code=201,
    summary="Create an API token (the token is in this response only)",
)
def add_token(body: TokenCreate, session: DbSession, principal: CurrentPrincipal):
    owner_id = body.user_id or principal.user_id
    if owner_id != principal.user_id and not principal.can(Permission.MANAGE_USERS):
        raise Problem(403, "only admins create tokens for other users", type_="/problems/forbidden")
    owner = session.get(User, owner_id)
    if owner is None:
        raise invalid(f"user {owner_id} does not exist", "user_id")
    try:
        row, token = create_token(session, principal.actor, owner, body.name, body.expires_in_days)
    except AccountError as exc:
        raise invalid(str(exc), "expires_in_days") from exc
    return TokenCreated(**TokenOut.model_validate(row).model_dump(), token=token)


@router.delete("/{token_id}", status_code=204, summary="Revoke an API token")
def revoke_token(token_id: int, session: DbSession, principal: CurrentPrincipal):
    row = session.get(ApiToken, token_id)
    if row is None or (
        row.user_id != principal.user_id and not principal.can(Permission.MANAGE_USERS)
    ):
        raise not_found("token", token_id)
    if row.revoked_at is None:
        row.revoked_at = utcnow()
        record(session, principal.actor, "token.revoke", "token", row.id, prefix=row.prefix)
    return Response(status_code=204)
