"""The ``bulwark`` command's entry: ``bulwark agent …`` is dispatched before anything of the
service is imported, so the agent in a guest loads neither FastAPI nor SQLAlchemy."""

from __future__ import annotations

import sys


def main() -> None:
    if sys.argv[1:2] == ["agent"]:
        from app.agent.cli import main as agent_main

        sys.exit(agent_main(sys.argv[2:]))
    from app.cli import main as service_main

    service_main()
