"""``bulwark agent``: the in-guest agent for Exchange servers.

It runs inside the Exchange VM (a Windows service in production, a plain process too), is
enrolled to one server with a one-time code, and pulls its work from the service over HTTPS
(long poll, heartbeat, cancellation): it never listens on a port. It streams database and log
chunks into the repository through the service, sending only the chunks the repository lacks,
and tells Exchange to truncate its logs only once the service says the restore point is
durable.

Only the standard library and blake3 are imported here (no FastAPI, no SQLAlchemy): this is
what a guest needs, nothing of the service.
"""

VERSION = "0.1.0"
