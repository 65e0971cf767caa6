"""Every table, imported here so metadata and Alembic see them all."""

from app.db.models.agents import Agent, AgentEnrollment, AgentTask
from app.db.models.arrays import ArrayVolume
from app.db.models.audit import AuditEvent
from app.db.models.catalog import LegalHold, RestorePoint, RestorePointCopy
from app.db.models.connections import Connection
from app.db.models.exchange import ExchangeDatabase, ExchangeServer
from app.db.models.inventory import (
    Cluster,
    Datacenter,
    Datastore,
    Host,
    VirtualDisk,
    VirtualMachine,
)
from app.db.models.jobs import Job, JobEvent, Proxy
from app.db.models.mailboxes import (
    ArchiveMessage,
    Mailbox,
    MailboxRestorePoint,
    MailFolder,
    MailItem,
)
from app.db.models.policies import Policy, PolicyTarget
from app.db.models.repository import RepositoryUsage
from app.db.models.settings import ServiceSetting
from app.db.models.users import ApiToken, User

__all__ = [
    "Agent",
    "AgentEnrollment",
    "AgentTask",
    "ApiToken",
    "ArrayVolume",
    "ArchiveMessage",
    "AuditEvent",
    "Cluster",
    "Connection",
    "Datacenter",
    "Datastore",
    "ExchangeDatabase",
    "ExchangeServer",
    "Host",
    "Job",
    "JobEvent",
    "LegalHold",
    "MailFolder",
    "MailItem",
    "Mailbox",
    "MailboxRestorePoint",
    "Policy",
    "PolicyTarget",
    "Proxy",
    "RepositoryUsage",
    "ServiceSetting",
    "RestorePoint",
    "RestorePointCopy",
    "User",
    "VirtualDisk",
    "VirtualMachine",
]
