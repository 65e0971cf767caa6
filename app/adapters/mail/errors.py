"""What can go wrong talking to a mail server, in the operator's words."""

from __future__ import annotations


class MailError(Exception):
    """Any failure talking to the mail server."""


class Unreachable(MailError):
    pass


class AuthenticationFailed(MailError):
    pass


class CertificateUntrusted(MailError):
    permanent = True  # a job meeting it fails at once (see app.jobs.context.is_permanent)

    def __init__(self, message: str, thumbprint: str | None = None):
        super().__init__(message)
        self.thumbprint = thumbprint
