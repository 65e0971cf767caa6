"""``bulwark agent enroll|run|status``: the agent's command line (standard library only).

The configuration (service URL, pinned fingerprint, credential) is one JSON file readable
only by its owner: ``--config``, ``BULWARK_AGENT_CONFIG``, or ``%ProgramData%\\Bulwark\\agent.json``
on Windows and ``~/.config/bulwark/agent.json`` elsewhere.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import socket
import sys
from pathlib import Path
from typing import Any

from app.agent import VERSION
from app.agent.client import (
    AgentClient,
    AgentHttpError,
    PinMismatch,
    fetch_fingerprint,
    normalise_fingerprint,
)
from app.agent.protocol import PREFIX


def default_config() -> Path:
    if env := os.environ.get("BULWARK_AGENT_CONFIG"):
        return Path(env)
    if os.name == "nt":
        return Path(os.environ.get("PROGRAMDATA", r"C:\ProgramData")) / "Bulwark" / "agent.json"
    return Path.home() / ".config" / "bulwark" / "agent.json"


def load_config(path: Path) -> dict[str, Any]:
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise SystemExit(
            f"error: {path} does not exist; run 'bulwark agent enroll' first"
        ) from None


def save_config(path: Path, doc: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(doc, fh, indent=1)
    os.replace(tmp, path)


def open_exchange(spec: str):
    """``standin:<server root>`` (the stand-in Exchange, for tests) or ``windows``."""
    if spec.startswith("standin:"):
        from app.agent.standin import StandInExchange

        return StandInExchange(Path(spec.removeprefix("standin:")))
    if spec == "windows":
        from app.agent.windows import WindowsExchange

        return WindowsExchange()
    raise SystemExit(f"error: unknown Exchange '{spec}' (use 'windows' or 'standin:<path>')")


def enroll(args: argparse.Namespace) -> int:
    url = args.url.rstrip("/")
    try:
        seen = fetch_fingerprint(url)
    except OSError as exc:
        print(f"error: cannot reach {url}: {exc}", file=sys.stderr)
        return 1
    if args.fingerprint and normalise_fingerprint(args.fingerprint) != seen:
        print(
            f"error: {url} presents certificate {seen}, not {args.fingerprint}: refusing to "
            "enroll (someone may be in between)",
            file=sys.stderr,
        )
        return 1
    client = AgentClient(url, seen, retries=2)
    try:
        reply = client.post(
            PREFIX + "/enroll",
            {"code": args.code, "hostname": socket.gethostname(), "version": VERSION},
        )
    except AgentHttpError as exc:
        print(f"error: enrollment refused: {exc.message}", file=sys.stderr)
        return 1
    finally:
        client.close()
    config = Path(args.config) if args.config else default_config()
    save_config(
        config,
        {
            "url": url,
            "fingerprint": seen,
            "credential": reply["credential"],
            "server": reply["server"],
            "agent_id": reply["agent_id"],
            "exchange": args.exchange,
        },
    )
    print(f"enrolled for {reply['server']}; pinned {seen}; configuration in {config}")
    return 0


def run(args: argparse.Namespace) -> int:
    from app.agent.runner import Agent

    config_path = Path(args.config) if args.config else default_config()
    config = load_config(config_path)
    logging.basicConfig(
        level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    exchange = open_exchange(args.exchange or config.get("exchange") or "windows")
    client = AgentClient(config["url"], config["fingerprint"], config["credential"])
    agent = Agent(client, exchange, config_path.parent / f"{config_path.stem}-state")

    def _stop(*_):
        # Out of any blocking call at once: a backup under way releases its shadow copy
        # without completing it (the logs stay), as after any failure.
        agent.stop.set()
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, _stop)
    try:
        agent.run_forever()
    except PinMismatch as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except AgentHttpError as exc:
        print(f"error: the service refused this agent: {exc.message}", file=sys.stderr)
        return 3
    except KeyboardInterrupt:
        pass
    return 0


def status(args: argparse.Namespace) -> int:
    config_path = Path(args.config) if args.config else default_config()
    config = load_config(config_path)
    print(
        json.dumps(
            {k: v for k, v in config.items() if k != "credential"} | {"version": VERSION}, indent=1
        )
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bulwark agent", description="The in-guest agent.")
    parser.add_argument("--config", help="the agent's configuration file")
    sub = parser.add_subparsers(dest="command", required=True)
    e = sub.add_parser("enroll", help="enroll this server with a one-time code")
    e.add_argument("--url", required=True, help="the service, e.g. https://bulwark:8443")
    e.add_argument("--code", required=True, help="the one-time code from the server's page")
    e.add_argument("--fingerprint", help="the certificate fingerprint shown on the page")
    e.add_argument("--exchange", default="windows", help="windows, or standin:<path>")
    r = sub.add_parser("run", help="pull and do work until stopped")
    r.add_argument("--exchange", help="override the configured Exchange")
    r.add_argument("--log-level", default="INFO")
    sub.add_parser("status", help="show the configuration (without the credential)")
    args = parser.parse_args(argv)
    return {"enroll": enroll, "run": run, "status": status}[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
