"""The audit trail: who changed what, when, and why."""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from shipway.store.models import AuditEvent


def record(session: Session, actor: str, action: str, subject: str, **details: Any) -> None:
    """Add an event in the caller's transaction, so it commits with the change it describes."""
    session.add(AuditEvent(actor=actor, action=action, subject=subject, details=details))
