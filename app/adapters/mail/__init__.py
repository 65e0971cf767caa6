"""Mail adapter: IMAP sessions through IMAPClient, as a service account that opens every
mailbox (Dovecot master user ``user*master``, or SASL PLAIN with an authorization identity as
Exchange does for full-access accounts).

Synchronous, like IMAPClient. No framework or database code: callers get plain dataclasses
and :class:`MailError` subclasses with operator-readable messages.
"""

from .client import (
    FetchedMessage,
    FolderInfo,
    FolderState,
    MailAccount,
    MailSession,
    connect,
)
from .errors import AuthenticationFailed, CertificateUntrusted, MailError, Unreachable

__all__ = [
    "AuthenticationFailed",
    "CertificateUntrusted",
    "FetchedMessage",
    "FolderInfo",
    "FolderState",
    "MailAccount",
    "MailError",
    "MailSession",
    "Unreachable",
    "connect",
]
