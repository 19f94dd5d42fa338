"""Outbound notifications (signed webhooks)."""
