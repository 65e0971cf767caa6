"""The ``bulwark`` command."""

from __future__ import annotations

import logging

import typer

from app.audit import Actor
from app.config import get_settings
from app.jobs.cli import worker_command
from app.security.roles import Role

cli = typer.Typer(help="Bulwark: data protection for Exchange on vSphere.", no_args_is_help=True)
user_cli = typer.Typer(help="Manage users.", no_args_is_help=True)
token_cli = typer.Typer(help="Manage API tokens.", no_args_is_help=True)
cli.add_typer(user_cli, name="user")
cli.add_typer(token_cli, name="token")
CLI_ACTOR = Actor("cli", "system")


def _runtime():
    from app.state import Runtime

    return Runtime.from_settings(get_settings())


@cli.command()
def serve(
    host: str = typer.Option(None, help="Address to listen on (default BULWARK_HOST)"),
    port: int = typer.Option(None, help="Port to listen on (default BULWARK_PORT)"),
) -> None:
    """Run the API, dashboard, scheduler and an in-process worker."""
    import uvicorn

    from app.main import create_app

    settings = get_settings()
    logging.basicConfig(
        level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
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
        proxy_headers=True,
        ssl_certfile=str(tls[0]) if tls else None,
        ssl_keyfile=str(tls[1]) if tls else None,
    )


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
) -> None:
    """Create a user (the first admin comes from here or BULWARK_ADMIN_PASSWORD)."""
    from app.accounts import AccountError, create_user
    from app.bootstrap import prepare

    if len(password) < 12:
        raise typer.BadParameter("use at least 12 characters", param_hint="password")
    runtime = _runtime()
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
    from sqlalchemy import select

    from app.accounts import create_token
    from app.bootstrap import prepare
    from app.db.models import User

    runtime = _runtime()
    prepare(runtime)
    with runtime.db.session() as session:
        user = session.scalar(select(User).where(User.username == username))
        if user is None:
            typer.echo(f"error: no user named '{username}'", err=True)
            raise typer.Exit(1)
        _, token = create_token(session, CLI_ACTOR, user, name, expires_in_days or None)
    typer.echo(token)


cli.command("worker")(worker_command)


def main() -> None:
    cli()
