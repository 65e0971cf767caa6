"""Backup policies: what to protect, how, when, and for how long."""

from __future__ import annotations

from sqlalchemy import JSON, ForeignKey, LargeBinary, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from app.db.base import Base, Timestamped
from app.db.types import StrEnumType
from app.domain.protection import Consistency, ProtectionMethod


class Policy(Timestamped, Base):
    __tablename__ = "policies"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    description: Mapped[str] = mapped_column(Text, default="")
    enabled: Mapped[bool] = mapped_column(default=True)
    method: Mapped[ProtectionMethod] = mapped_column(StrEnumType(ProtectionMethod))
    # Exactly one of the two: a cron expression, or a recovery point objective.
    schedule_cron: Mapped[str | None] = mapped_column(String(128))
    rpo_minutes: Mapped[int | None]
    consistency: Mapped[Consistency] = mapped_column(StrEnumType(Consistency))
    # Commands run in the guest around the snapshot (quiesce / resume the database).
    pre_script: Mapped[str | None] = mapped_column(Text)
    post_script: Mapped[str | None] = mapped_column(Text)
    script_timeout_s: Mapped[int] = mapped_column(default=20)
    # Snapshots kept on primary storage for instant recovery.
    keep_on_primary: Mapped[int] = mapped_column(default=0)
    repository_id: Mapped[int | None] = mapped_column(
        ForeignKey("connections.id", ondelete="RESTRICT")
    )
    keep_last: Mapped[int] = mapped_column(default=7)
    keep_daily: Mapped[int] = mapped_column(default=0)
    keep_weekly: Mapped[int] = mapped_column(default=0)
    keep_monthly: Mapped[int] = mapped_column(default=0)
    keep_yearly: Mapped[int] = mapped_column(default=0)
    # What the operator must be able to restore; the advisor refuses what the method can't give.
    restores_needed: Mapped[list[str]] = mapped_column(JSON, default=list)
    # Legal retention: nothing younger than this may be removed, whatever else says.
    compliance_retention_days: Mapped[int | None]

    # Who hears of failures and RPO breaches: a webhook (JSON signed with HMAC-SHA256 under a
    # secret sealed like connection passwords) and e-mail addresses (through BULWARK_SMTP_*).
    notify_on: Mapped[list[str]] = mapped_column(JSON, default=lambda: ["failure", "rpo_breach"])
    notify_webhook_url: Mapped[str | None] = mapped_column(String(512))
    notify_webhook_secret_ciphertext: Mapped[bytes | None] = mapped_column(LargeBinary)
    notify_emails: Mapped[list[str]] = mapped_column(JSON, default=list)
    # Exchange log truncation after a successful backup, for methods other than the agent
    # stream (which always truncates once the restore point is safe): require | try | off.
    truncate_logs: Mapped[str] = mapped_column(String(8), default="off", server_default="off")
    # A DAG database: which copy to back up (passive_first | passive | active) and the
    # servers preferred, in order.
    dag_source: Mapped[str] = mapped_column(
        String(16), default="passive_first", server_default="passive_first"
    )
    dag_preferred: Mapped[list[str]] = mapped_column(JSON, default=list)

    targets: Mapped[list[PolicyTarget]] = relationship(
        back_populates="policy", cascade="all, delete-orphan", lazy="selectin"
    )

    @property
    def has_webhook_secret(self) -> bool:
        return self.notify_webhook_secret_ciphertext is not None


class PolicyTarget(Base):
    """A server (its VM image) or one of its databases covered by a policy."""

    __tablename__ = "policy_targets"
    __table_args__ = (UniqueConstraint("policy_id", "server_id", "database_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    policy_id: Mapped[int] = mapped_column(ForeignKey("policies.id", ondelete="CASCADE"))
    server_id: Mapped[int] = mapped_column(
        ForeignKey("exchange_servers.id", ondelete="CASCADE"), index=True
    )
    database_id: Mapped[int | None] = mapped_column(
        ForeignKey("exchange_databases.id", ondelete="CASCADE")
    )

    policy: Mapped[Policy] = relationship(back_populates="targets")
