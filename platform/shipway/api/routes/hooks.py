"""Webhook endpoints: Git pushes and MLflow registry events, and what each delivery did.

``POST /hooks/git`` and ``POST /hooks/mlflow`` are called by GitHub, GitLab and MLflow,
which hold no Shipway token: they authenticate by the delivery's signature (the
secret shared with the sender, ``SHIPWAY_*_WEBHOOK_*``), not by a bearer token. A bad
or missing signature is 401 and nothing is recorded. ``GET /hooks/deliveries`` needs a
token like every other read (viewer role).

Their bodies are read before anyone is known, so at most ``MAX_BODY_BYTES`` of one is
read (GitHub's own cap on a webhook payload, 25 MB): a larger body is answered 413
without being held in memory.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException, Request, Response
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, ConfigDict

from shipway.api.deps import ContainerDep, IdPath, Viewer
from shipway.api.errors import responses
from shipway.api.schemas import ErrorOut, UtcDateTime
from shipway.gitops.push_events import InvalidPayload
from shipway.gitops.signatures import BadSignature
from shipway.services import hooks
from shipway.store.models import DeliveryStatus

router = APIRouter(prefix="/hooks", tags=["hooks"])

# GitHub caps webhook payloads at 25 MB ("Webhook events and payloads"); pushes and
# MLflow events are a few kB.
MAX_BODY_BYTES = 25 * 1024 * 1024


class DeliveryOut(BaseModel):
    """One accepted delivery and its outcome: ``queued`` until a worker has applied it,
    then ``applied`` (``plan`` holds what changed) or ``failed`` (``message`` says
    why); ``ignored`` when it was not an event to act on (``message`` says why)."""

    model_config = ConfigDict(from_attributes=True)

    id: str
    provider: str
    delivery_id: str
    event: str
    ref: str | None
    commit: str | None
    repository: str | None
    model: str | None
    version: int | None
    alias: str | None
    status: str
    message: str | None
    plan: dict[str, Any] | None
    received_at: UtcDateTime
    finished_at: UtcDateTime | None


class ReceiptOut(BaseModel):
    detail: str
    duplicate: bool
    delivery: DeliveryOut


JSON_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": {"type": "object"}}},
    }
}
RECEIPTS: dict[int | str, dict[str, Any]] = {
    200: {"model": ReceiptOut, "description": "Acknowledged: ignored (why), or a replay"},
    202: {"model": ReceiptOut, "description": "Accepted: a worker applies it"},
    413: {
        "model": ErrorOut,
        "description": f"The body is larger than {MAX_BODY_BYTES} bytes (25 MB); not read",
    },
}


async def _body(request: Request) -> bytes:
    """The raw body, refused (413) past ``MAX_BODY_BYTES``: by its declared length before
    reading, and by what arrives while reading (a chunked body declares none)."""
    too_large = HTTPException(
        413,
        f"the body is larger than {MAX_BODY_BYTES} bytes (25 MB, GitHub's cap on a webhook "
        "payload); nothing was read or recorded",
    )
    declared = request.headers.get("content-length", "")
    if declared.isascii() and declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise too_large
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise too_large
        chunks.append(chunk)
    return b"".join(chunks)


def _receipt(receipt: hooks.Receipt, response: Response) -> ReceiptOut:
    delivery = receipt.delivery
    if receipt.duplicate:
        detail = f"already received (delivery {delivery.id}, {delivery.status}); nothing done"
        response.status_code = 200
    elif delivery.status == DeliveryStatus.IGNORED:
        detail = f"ignored: {delivery.message}"
        response.status_code = 200
    else:
        detail = f"queued: GET /api/v1/hooks/deliveries/{delivery.id} shows what it does"
        response.status_code = 202
    return ReceiptOut(
        detail=detail, duplicate=receipt.duplicate, delivery=DeliveryOut.model_validate(delivery)
    )


def _refusals(call: Any, *args: Any) -> Any:
    """The hook's own refusals as HTTP answers: 401 bad signature, 400 bad payload."""
    try:
        return call(*args)
    except BadSignature as exc:
        raise HTTPException(401, f"signature check failed: {exc}") from None
    except InvalidPayload as exc:
        raise HTTPException(400, str(exc)) from None


@router.post(
    "/git",
    status_code=202,
    response_model=ReceiptOut,
    responses={**RECEIPTS, **responses(400, 404, 503)},
    openapi_extra=JSON_BODY,
)
async def git_push(request: Request, response: Response, container: ContainerDep) -> ReceiptOut:
    """A GitHub (``X-GitHub-Event``, ``X-GitHub-Delivery``, ``X-Hub-Signature-256``) or
    GitLab (``X-Gitlab-Event``, ``X-Gitlab-Event-UUID``, ``X-Gitlab-Token``) delivery.

    No bearer token: the signature authenticates (401 when it is wrong or missing, or
    the request names neither sender; nothing recorded). A push to
    ``SHIPWAY_GITOPS_BRANCH`` is 202: a worker fetches that branch from
    ``SHIPWAY_GITOPS_REPOSITORY_URL`` and applies the spec at its tip; a pushed commit
    the branch has moved past is recorded as ignored ("superseded: <branch> is at
    <tip>"), one not on the branch fails, naming it. Other
    events, tags, other branches, a deleted branch: 200, recorded as ignored with the
    reason. A delivery id already received: 200, nothing done. 400 for a body that is
    not the push it claims (the field is named); 404 while the provider's secret or the
    repository URL is not set (the message names the setting); 413 for a body over 25 MB
    (not read); 503 when the task queue cannot take it (nothing recorded: send it again)."""
    body = await _body(request)
    receipt = await run_in_threadpool(
        _refusals, hooks.receive_git, container, dict(request.headers), body
    )
    return _receipt(receipt, response)


@router.post(
    "/mlflow",
    status_code=202,
    response_model=ReceiptOut,
    responses={**RECEIPTS, **responses(400, 404, 503)},
    openapi_extra=JSON_BODY,
)
async def mlflow_event(request: Request, response: Response, container: ContainerDep) -> ReceiptOut:
    """An MLflow 3 webhook delivery (``X-MLflow-Delivery-Id``, ``X-MLflow-Timestamp``,
    ``X-MLflow-Signature: v1,<base64>``).

    No bearer token: the signature authenticates, and a timestamp more than 300 s from
    the server's clock is refused (401), so a captured delivery cannot be replayed
    later. ``model_version.created`` and ``model_version_alias.created`` are 202 when the
    model's last applied ``shipway.yaml`` lists the event in ``triggers.mlflow.events``
    (and, for an alias, the alias in ``triggers.mlflow.aliases``): a worker queues the
    builds the spec asks for, for that version. Anything else: 200, recorded as
    ignored with the reason. 400, 404, 413, 503 as for ``/hooks/git``."""
    body = await _body(request)
    receipt = await run_in_threadpool(
        _refusals, hooks.receive_mlflow, container, dict(request.headers), body
    )
    return _receipt(receipt, response)


@router.get("/deliveries", response_model=list[DeliveryOut], responses=responses())
def list_deliveries(container: ContainerDep, _: Viewer) -> list[DeliveryOut]:
    """The latest 100 accepted deliveries, newest first."""
    return [DeliveryOut.model_validate(d) for d in hooks.list_deliveries(container)]


@router.get("/deliveries/{delivery_id}", response_model=DeliveryOut, responses=responses(404, 422))
def get_delivery(delivery_id: IdPath, container: ContainerDep, _: Viewer) -> DeliveryOut:
    """One delivery: what a push or an MLflow event did (its plan, or why it failed)."""
    return DeliveryOut.model_validate(hooks.get(container, delivery_id))
