"""Domain exceptions under one root.

Each edge maps them in one table: the API to HTTP status codes
(`shipway.api.errors`), Celery tasks to retry-or-give-up (`retriable`).
"""

from __future__ import annotations


class ShipwayError(Exception):
    """Root of every error Shipway raises on purpose; its message is shown to users."""

    retriable = False


class InvalidInput(ShipwayError):
    """The caller sent something unusable: a malformed ONNX file, a mismatched sample."""


class NotFound(ShipwayError):
    """A named model, version, build or deployment does not exist."""


class Gone(NotFound):
    """It existed and is no more: MLflow state that Shipway relies on (a registered
    model, a version, the run holding its files) was deleted outside Shipway, for good."""


class Conflict(ShipwayError):
    """The request clashes with current state (e.g. a build that is not deployable)."""


class Unavailable(ShipwayError):
    """A dependency (MLflow, broker, tritonserver) is down or not installed; may pass."""

    retriable = True


class BuildFailed(ShipwayError):
    """A build ran but its result must not be used."""
