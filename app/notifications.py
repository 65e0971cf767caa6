"""Notifications of failed jobs and RPO breaches: signed webhooks and e-mail.

They are sent from the scheduler's tick by sweeping the database (an outbox read from the
facts): a failed job or a breach is noticed even if the process that saw it died, and each is
sent once, recorded in the audit log (at least once: a crash between sending and recording
sends it again).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import smtplib
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from email.message import EmailMessage
from typing import Any

import httpx
from sqlalchemy import select
from sqlalchemy.orm import Session

from app.audit import SYSTEM, record
from app.config import Settings
from app.db.models import (
    AuditEvent,
    Connection,
    ExchangeServer,
    Job,
    Policy,
    RepositoryUsage,
    RestorePoint,
    RestorePointCopy,
)
from app.domain.jobs import JobState
from app.domain.protection import RestorePointStatus, Verification
from app.domain.rpo import objective_s
from app.protection.catalog import captures
from app.security import settings as security_settings
from app.security.secrets import SecretBox
from app.security.settings import webhook_refusal

log = logging.getLogger(__name__)
SIGNATURE_HEADER = "X-Bulwark-Signature"
LOOKBACK = timedelta(days=1)


@dataclass
class Notice:
    event: str  # job.failed | rpo.breach | restore_point.damaged | restore_point.unavailable
    key: str  # what makes it the same notice twice (recorded in the audit log)
    subject: str
    text: str
    data: dict[str, Any] = field(default_factory=dict)


def sign(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


class Notifier:
    def __init__(self, settings: Settings, secrets: SecretBox, *, timeout: float = 10.0):
        self.settings = settings
        self.secrets = secrets
        self.timeout = timeout
        self._webhook_networks: list[str] | None = None  # read from the settings by sweep()

    # -- delivery ---------------------------------------------------------------------------
    def deliver(self, policy: Policy, notice: Notice) -> list[str]:
        """Send to the policy's channels; returns the channels that accepted it."""
        sent = []
        if policy.notify_webhook_url and self._webhook(policy, notice):
            sent.append("webhook")
        if policy.notify_emails and self._email(policy, notice):
            sent.append("email")
        return sent

    def _webhook(self, policy: Policy, notice: Notice) -> bool:
        allowed = self._webhook_networks
        refusal = None if allowed is None else webhook_refusal(policy.notify_webhook_url, allowed)
        if refusal:
            log.warning("policy %s: webhook not sent: %s", policy.name, refusal)
            return False
        body = json.dumps(
            {"event": notice.event, "subject": notice.subject, "text": notice.text, **notice.data},
            sort_keys=True,
        ).encode()
        headers = {"Content-Type": "application/json", "X-Bulwark-Event": notice.event}
        if policy.notify_webhook_secret_ciphertext:
            secret = self.secrets.open(policy.notify_webhook_secret_ciphertext, "webhook")
            headers[SIGNATURE_HEADER] = sign(secret, body)
        try:
            response = httpx.post(
                policy.notify_webhook_url, content=body, headers=headers, timeout=self.timeout
            )
            response.raise_for_status()
            return True
        except httpx.HTTPError as exc:
            log.warning("policy %s: webhook failed: %s", policy.name, type(exc).__name__)
            return False

    def _email(self, policy: Policy, notice: Notice) -> bool:
        s = self.settings
        if not s.smtp_host:
            log.warning("policy %s: e-mail wanted but BULWARK_SMTP_HOST is not set", policy.name)
            return False
        message = EmailMessage()
        message["From"] = s.smtp_from
        message["To"] = ", ".join(policy.notify_emails)
        message["Subject"] = f"[Bulwark] {notice.subject}"
        message.set_content(notice.text)
        try:
            with smtplib.SMTP(s.smtp_host, s.smtp_port, timeout=self.timeout) as smtp:
                if s.smtp_starttls:
                    smtp.starttls()
                if s.smtp_username and s.smtp_password:
                    smtp.login(s.smtp_username, s.smtp_password.get_secret_value())
                smtp.send_message(message)
            return True
        except (OSError, smtplib.SMTPException) as exc:
            log.warning("policy %s: e-mail failed: %s", policy.name, type(exc).__name__)
            return False

    # -- what to send -----------------------------------------------------------------------
    def sweep(
        self,
        session: Session,
        now: datetime,
        failures: list[tuple[Policy, str, str]] | None = None,
    ) -> int:
        """Send what is owed; returns how many notices went out.

        ``failures`` are (policy, what failed, error) the caller met (the scheduler's
        per-policy work). Each source, and each policy within one, is isolated: one policy
        that cannot be evaluated is reported as such and never silences the others.
        """
        failures = list(failures or [])
        # Checked again at delivery: a host name may point elsewhere since it was saved.
        self._webhook_networks = security_settings.load(session).webhook_allowed_networks
        owed: list[tuple[Policy, Notice]] = []
        for source in (
            self._failed_jobs,
            self._rpo_breaches,
            self._damaged_points,
            self._unavailable_points,
            self._exchange_logs,
            self._full_repositories,
        ):
            try:
                with session.begin_nested():
                    owed += source(session, now, failures)
            except Exception as exc:
                log.exception("notifications: %s failed", source.__name__)
                record(
                    session,
                    SYSTEM,
                    "notification.sweep_failed",
                    "notification",
                    source.__name__.strip("_"),
                    outcome="failure",
                    error=f"{type(exc).__name__}: {exc}"[:500],
                )
        owed += [self._failure_notice(session, *failure) for failure in failures]
        sent_keys = set(
            session.scalars(
                select(AuditEvent.object_id).where(
                    AuditEvent.action == "notification.sent",
                    AuditEvent.object_id.in_([n.key for _, n in owed]),
                )
            )
        )
        count = 0
        for policy, notice in owed:
            if notice.key in sent_keys:
                continue
            channels = self.deliver(policy, notice)
            if channels:
                record(
                    session,
                    SYSTEM,
                    "notification.sent",
                    "notification",
                    notice.key,
                    event=notice.event,
                    policy=policy.name,
                    channels=channels,
                )
                sent_keys.add(notice.key)
                count += 1
        return count

    def _failure_notice(
        self, session: Session, policy: Policy, what: str, error: str
    ) -> tuple[Policy, Notice]:
        """A policy that could not be evaluated: recorded once in the audit log, sent once."""
        digest = hashlib.sha256(f"{what}\n{error}".encode()).hexdigest()[:16]
        key = f"policy-failed:{policy.id}:{digest}"
        seen = session.scalar(
            select(AuditEvent.id)
            .where(AuditEvent.action == "policy.failure", AuditEvent.object_id == key)
            .limit(1)
        )
        if seen is None:
            log.error("policy %s: %s failed: %s", policy.name, what, error)
            record(
                session,
                SYSTEM,
                "policy.failure",
                "notification",
                key,
                outcome="failure",
                policy=policy.name,
                what=what,
                error=error[:500],
            )
        text = f"policy '{policy.name}': {what} failed and is skipped until fixed: {error}"
        return policy, Notice(
            "policy.failed",
            key,
            f"policy '{policy.name}' cannot be evaluated",
            text,
            {"policy": policy.name, "what": what, "error": error},
        )

    def _failed_jobs(
        self, session: Session, now: datetime, failures: list | None = None
    ) -> list[tuple[Policy, Notice]]:
        rows = session.execute(
            select(Job, Policy)
            .join(Policy, Job.policy_id == Policy.id)
            .where(Job.state == JobState.FAILED, Job.finished_at >= now - LOOKBACK)
        ).all()
        out = []
        for job, policy in rows:
            if "failure" not in policy.notify_on:
                continue
            text = (
                f"{job.kind} job {job.id} of policy '{policy.name}' failed after "
                f"{job.attempts} attempt(s): {job.error or 'no error recorded'}"
            )
            out.append(
                (
                    policy,
                    Notice(
                        "job.failed",
                        f"job-failed:{job.id}",
                        f"{job.kind} job {job.id} failed",
                        text,
                        {"job_id": job.id, "policy": policy.name, "error": job.error},
                    ),
                )
            )
        return out

    def _exchange_logs(
        self, session: Session, now: datetime, failures: list | None = None
    ) -> list[tuple[Policy, Notice]]:
        """Backups after which Exchange kept its logs, or whose log disk is filling: the
        databases dismount when it is full, however good the backups are."""
        rows = session.execute(
            select(RestorePoint, Policy)
            .join(Policy, RestorePoint.policy_id == Policy.id)
            .where(RestorePoint.captured_at >= now - LOOKBACK)
        ).all()
        out = []
        for point, policy in rows:
            details = point.details or {}
            warnings = list(details.get("log_warnings") or [])
            truncation = details.get("truncation")
            guest = isinstance(truncation, dict) and truncation.get("via") == "guest"
            if not warnings and guest and not truncation.get("truncated"):
                warnings.append("Exchange's logs were not truncated after the backup")
            if not warnings or "failure" not in policy.notify_on:
                continue
            text = f"restore point {point.id} of policy '{policy.name}': " + "; ".join(warnings)
            out.append(
                (
                    policy,
                    Notice(
                        "exchange.logs",
                        f"exchange-logs:{point.id}",
                        f"Exchange logs need attention after restore point {point.id}",
                        text,
                        {"restore_point_id": point.id, "policy": policy.name, "warnings": warnings},
                    ),
                )
            )
        return out

    def _damaged_points(
        self, session: Session, now: datetime, failures: list | None = None
    ) -> list[tuple[Policy, Notice]]:
        """Restore points a verify found damaged (notified with failures)."""
        rows = session.execute(
            select(RestorePoint, Policy)
            .join(Policy, RestorePoint.policy_id == Policy.id)
            .where(
                RestorePoint.verification == Verification.DAMAGED,
                RestorePoint.verified_at >= now - LOOKBACK,
            )
        ).all()
        out = []
        for point, policy in rows:
            if "failure" not in policy.notify_on:
                continue
            found = (point.details or {}).get("verification") or {}
            blocks = found.get("damaged_blocks") or []
            first = blocks[0] if blocks else None
            where = (
                f"{found.get('damaged_count', len(blocks))} damaged block(s), first block "
                f"{first['block']} ({first['digest']}): {first['reason']}"
                if first
                else found.get("error") or "its repository copy is unreadable"
            )
            text = f"restore point {point.id} ({policy.name}) failed verification: {where}"
            out.append(
                (
                    policy,
                    Notice(
                        "restore_point.damaged",
                        f"damaged:{point.id}:{point.verified_at.isoformat()}"[:64],
                        f"restore point {point.id} is damaged",
                        text,
                        {"restore_point_id": point.id, "policy": policy.name},
                    ),
                )
            )
        return out

    def _full_repositories(
        self, session: Session, now: datetime, failures: list | None = None
    ) -> list[tuple[Policy, Notice]]:
        """Repositories measured fuller than ``repository_full_percent`` (after a backup),
        told to the policies that store into them, once a day each."""
        limit = self.settings.repository_full_percent
        rows = session.execute(
            select(RepositoryUsage, Connection)
            .join(Connection, Connection.id == RepositoryUsage.connection_id)
            .where(
                RepositoryUsage.capacity_bytes > 0,
                RepositoryUsage.measured_at >= now - LOOKBACK,
            )
        ).all()
        out = []
        for usage, conn in rows:
            used = 100 * (usage.capacity_bytes - usage.free_bytes) / usage.capacity_bytes
            if used < limit:
                continue
            where = (conn.options or {}).get("path") or (conn.options or {}).get("bucket", "")
            text = (
                f"repository '{conn.name}' at {where} is {used:.0f}% full "
                f"({usage.free_bytes / 2**30:.1f} GiB free of {usage.capacity_bytes / 2**30:.1f} "
                f"GiB, measured {usage.measured_at:%Y-%m-%d %H:%M} UTC); the alert is at "
                f"{limit}%: expire old restore points or grow the disk before backups fail"
            )
            for policy in session.scalars(select(Policy).where(Policy.repository_id == conn.id)):
                if "failure" not in policy.notify_on:
                    continue
                out.append(
                    (
                        policy,
                        Notice(
                            "repository.full",
                            f"repository-full:{conn.id}:{policy.id}:{now:%Y-%m-%d}",
                            f"repository '{conn.name}' is {used:.0f}% full",
                            text,
                            {"repository_id": conn.id, "policy": policy.name, "percent": used},
                        ),
                    )
                )
        return out

    def _unavailable_points(
        self, session: Session, now: datetime, failures: list | None = None
    ) -> list[tuple[Policy, Notice]]:
        """Restore points left with no copy by snapshots deleted outside Bulwark (notified
        with failures): the operator believed they could restore from them."""
        rows = session.execute(
            select(RestorePoint, Policy)
            .join(Policy, RestorePoint.policy_id == Policy.id)
            .where(
                RestorePoint.status == RestorePointStatus.UNAVAILABLE,
                RestorePoint.id.in_(
                    select(RestorePointCopy.restore_point_id).where(
                        RestorePointCopy.gone_at >= now - LOOKBACK
                    )
                ),
            )
        ).all()
        out = []
        for point, policy in rows:
            if "failure" not in policy.notify_on:
                continue
            how = "; ".join(
                f"{c.location.value} {c.reference} {c.gone_reason}"
                for c in point.copies
                if c.gone_at is not None
            )
            text = (
                f"restore point {point.id} ({policy.name}, captured "
                f"{point.captured_at:%Y-%m-%d %H:%M} UTC) is unavailable: every copy is gone "
                f"({how})"
            )
            out.append(
                (
                    policy,
                    Notice(
                        "restore_point.unavailable",
                        f"unavailable:{point.id}",
                        f"restore point {point.id} is unavailable",
                        text,
                        {"restore_point_id": point.id, "policy": policy.name},
                    ),
                )
            )
        return out

    def _rpo_breaches(
        self, session: Session, now: datetime, failures: list | None = None
    ) -> list[tuple[Policy, Notice]]:
        """Targets whose newest restore point is older than the policy's objective: its RPO,
        or for a cron policy the longest gap of its schedule (as the overview measures it)."""
        policies = session.scalars(select(Policy).where(Policy.enabled.is_(True))).all()
        memo: dict[str, float | None] = {}
        objectives: dict[int, float | None] = {}
        for p in policies:
            try:
                objectives[p.id] = objective_s(p.rpo_minutes, p.schedule_cron, now, memo)
            except Exception as exc:
                objectives[p.id] = None
                (failures if failures is not None else []).append(
                    (p, "the RPO check", f"{type(exc).__name__}: {exc}")
                )
        policies = [
            p
            for p in policies
            if "rpo_breach" in p.notify_on and p.targets and objectives[p.id] is not None
        ]
        if not policies:
            return []
        newest = captures.newest(session)
        names = dict(session.execute(select(ExchangeServer.id, ExchangeServer.name)).all())
        out = []
        for policy in policies:
            objective = objectives[policy.id]
            rpo_min = int(objective // 60)
            stated = (
                f"RPO {rpo_min} min"
                if policy.rpo_minutes is not None
                else f"schedule '{policy.schedule_cron}' runs at most {rpo_min} min apart"
            )
            for t in policy.targets:
                since = newest.get((policy.id, t.server_id, t.database_id))
                reference = since or policy.created_at
                if (now - reference).total_seconds() <= objective:
                    continue
                age_min = int((now - reference).total_seconds() // 60)
                label = names.get(t.server_id, f"server {t.server_id}")
                key = f"rpo:{policy.id}:{t.server_id}:{t.database_id}:{reference.isoformat()}"
                text = (
                    f"{label}: the newest restore point of policy '{policy.name}' is "
                    f"{age_min} min old ({stated})"
                    if since
                    else f"{label}: policy '{policy.name}' has no restore point after "
                    f"{age_min} min ({stated})"
                )
                out.append(
                    (
                        policy,
                        Notice(
                            "rpo.breach",
                            key[:64],
                            f"RPO breached for {label}",
                            text,
                            {
                                "policy": policy.name,
                                "server": label,
                                "database_id": t.database_id,
                                "age_minutes": age_min,
                                "rpo_minutes": rpo_min,
                                "schedule_cron": policy.schedule_cron,
                            },
                        ),
                    )
                )
        return out
