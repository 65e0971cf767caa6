"""The ``bulwark`` command."""

from __future__ import annotations

from pathlib import Path

import typer

from app import logs, remote_commands
from app.audit import Actor
from app.config import get_settings
from app.security.roles import Role
from app.worker_cli import worker_command

cli = typer.Typer(help="Bulwark: data protection for Exchange on vSphere.", no_args_is_help=True)
user_cli = typer.Typer(help="Manage users.", no_args_is_help=True)
token_cli = typer.Typer(help="Manage API tokens.", no_args_is_help=True)
cli.add_typer(user_cli, name="user")
cli.add_typer(token_cli, name="token")
CLI_ACTOR = Actor("cli", "system")


def _runtime(create_database: bool = False):
    """The service's runtime for an admin command, on the database the service uses.

    Run in the wrong directory, the default SQLite path points at a file that does not exist;
    creating it there (with a new secret key beside it) would report success on a database the
    service never reads. So a command refuses a missing database unless told to create one, and
    always says which database it works on.
    """
    from sqlalchemy import make_url

    from app.state import Runtime

    settings = get_settings()
    url = settings.effective_database_url
    typer.echo(f"database: {make_url(url).render_as_string(hide_password=True)}", err=True)
    if not create_database and not _database_exists(url):
        typer.echo(
            "error: no Bulwark database there. Run the command where the service runs, or set "
            "BULWARK_DATA_DIR / BULWARK_DATABASE_URL as the service has them; pass "
            "--create-database to start a new one.",
            err=True,
        )
        raise typer.Exit(2)
    return Runtime.from_settings(settings)


def _database_exists(url: str) -> bool:
    """A SQLite file that exists, or a server database that has Bulwark's schema."""
    from sqlalchemy import create_engine, inspect, make_url

    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        return bool(parsed.database) and Path(parsed.database).is_file()
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return inspect(conn).has_table("alembic_version")
    except Exception:
        return False
    finally:
        engine.dispose()


CREATE_DATABASE = typer.Option(
    False, "--create-database", help="Create the database if there is none (a new installation)"
)


@cli.command()
def serve(
    host: str = typer.Option(None, help="Address to listen on (default BULWARK_HOST)"),
    port: int = typer.Option(None, help="Port to listen on (default BULWARK_PORT)"),
) -> None:
    """Run the API, dashboard, scheduler and an in-process worker."""
    import uvicorn

    from app.main import create_app

    settings = get_settings()
    logs.configure(settings.log_level, settings.log_format)
    host = host or settings.host
    port = port or settings.port
    tls = settings.tls_files()
    scheme = "https" if tls else "http"
    typer.echo(
        f"Bulwark dashboard: {scheme}://{host}:{port}/  (API docs: {scheme}://{host}:{port}/docs)"
    )
    if tls:
        from app.tls import fingerprint

        typer.echo(f"certificate fingerprint (agents pin it): {fingerprint(tls[0])}")
    uvicorn.run(
        create_app(settings, background_jobs=True),
        host=host,
        port=port,
        log_level="info",
        # JSON logs: uvicorn's loggers go through ours instead of its own text format.
        log_config=None if settings.log_format == "json" else uvicorn.config.LOGGING_CONFIG,
        **proxy_options(settings),
        ssl_certfile=str(tls[0]) if tls else None,
        ssl_keyfile=str(tls[1]) if tls else None,
    )


def proxy_options(settings) -> dict:
    """Uvicorn's forwarded-header handling: only for the proxies the settings name (uvicorn
    alone would believe any client on loopback)."""
    if not settings.trusted_proxies:
        return {"proxy_headers": False}
    return {"proxy_headers": True, "forwarded_allow_ips": ",".join(settings.trusted_proxies)}


@cli.command()
def migrate() -> None:
    """Bring the database schema to the newest version."""
    from app.db import migrate as migrations

    settings = get_settings()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    migrations.upgrade(settings.effective_database_url)
    typer.echo("database schema is up to date")


@user_cli.command("create")
def user_create(
    username: str,
    role: Role = typer.Option(Role.OPERATOR, help="admin, operator, restore-operator, auditor"),
    admin: bool = typer.Option(False, "--admin", help="Shorthand for --role admin"),
    password: str = typer.Option(
        ...,
        prompt=True,
        hide_input=True,
        confirmation_prompt=True,
        envvar="BULWARK_NEW_USER_PASSWORD",
    ),
    full_name: str = "",
    create_database: bool = CREATE_DATABASE,
) -> None:
    """Create a user (the first admin comes from here or BULWARK_ADMIN_PASSWORD)."""
    from app.accounts import AccountError, create_user
    from app.bootstrap import prepare

    if len(password) < 12:
        raise typer.BadParameter("use at least 12 characters", param_hint="password")
    runtime = _runtime(create_database)
    prepare(runtime)
    with runtime.db.session() as session:
        try:
            create_user(
                session, CLI_ACTOR, username, password, Role.ADMIN if admin else role, full_name
            )
        except AccountError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(1) from exc
    typer.echo(f"created user '{username}' with role {Role.ADMIN if admin else role}")


@token_cli.command("create")
def token_create(
    username: str,
    name: str = typer.Option(..., help="What the token is for, e.g. 'monitoring'"),
    expires_in_days: int = typer.Option(90, help="0 for a token that never expires"),
) -> None:
    """Create an API token for a user and print it once."""
    from app.accounts import AccountError, create_token
    from app.bootstrap import prepare

    runtime = _runtime()
    prepare(runtime)
    with runtime.db.session() as session:
        user = _user_named(session, username)
        try:
            _, token = create_token(session, CLI_ACTOR, user, name, expires_in_days or None)
        except AccountError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(2) from exc
    typer.echo(token)


def _user_named(session, username: str):
    from sqlalchemy import select

    from app.db.models import User

    user = session.scalar(select(User).where(User.username == username))
    if user is None:
        typer.echo(f"error: no user named '{username}'", err=True)
        raise typer.Exit(1)
    return user


@user_cli.command("list")
def user_list() -> None:
    """List users with their role and state."""
    from sqlalchemy import select

    from app.db.models import User

    runtime = _runtime()
    with runtime.db.session() as session:
        users = session.scalars(select(User).order_by(User.username)).all()
        rows = [
            (
                u.username,
                str(u.role),
                "active" if u.is_active else "disabled",
                f"{u.last_login_at:%Y-%m-%d %H:%M}" if u.last_login_at else "never",
            )
            for u in users
        ]
    remote_commands.table(("USER", "ROLE", "STATE", "LAST SIGN-IN"), rows)


@user_cli.command("reset-password")
def user_reset_password(
    username: str,
    password: str = typer.Option(
        ...,
        prompt=True,
        hide_input=True,
        confirmation_prompt=True,
        envvar="BULWARK_NEW_USER_PASSWORD",
    ),
) -> None:
    """Set a new password for a user (for the admin who forgot theirs)."""
    from app.accounts import reset_password

    if len(password) < 12:
        raise typer.BadParameter("use at least 12 characters", param_hint="password")
    runtime = _runtime()
    with runtime.db.session() as session:
        reset_password(session, CLI_ACTOR, _user_named(session, username), password)
    typer.echo(f"password of '{username}' reset")


@token_cli.command("list")
def token_list() -> None:
    """List API tokens (never their secret) with their last use."""
    from sqlalchemy import select
    from sqlalchemy.orm import selectinload

    from app.db.models import ApiToken

    def when(value) -> str:
        return f"{value:%Y-%m-%d %H:%M}" if value else "-"

    runtime = _runtime()
    with runtime.db.session() as session:
        tokens = session.scalars(
            select(ApiToken).options(selectinload(ApiToken.user)).order_by(ApiToken.id)
        ).all()
        rows = [
            (
                str(t.id),
                t.prefix,
                t.user.username,
                t.name,
                "revoked" if t.revoked_at else "active",
                when(t.expires_at) if t.expires_at else "never",
                when(t.last_used_at),
            )
            for t in tokens
        ]
    remote_commands.table(("ID", "PREFIX", "USER", "NAME", "STATE", "EXPIRES", "LAST USED"), rows)


@token_cli.command("revoke")
def token_revoke(token_id: int) -> None:
    """Revoke an API token by its id (see `bulwark token list`)."""
    from app.accounts import AccountError, revoke_token

    runtime = _runtime()
    with runtime.db.session() as session:
        try:
            revoke_token(session, CLI_ACTOR, token_id)
        except AccountError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(1) from exc
    typer.echo(f"token {token_id} revoked")


cli.command("worker")(worker_command)
remote_commands.register(cli)


def main() -> None:
    cli()
