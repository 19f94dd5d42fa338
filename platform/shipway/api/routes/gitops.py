"""``POST /apply``: make the platform match a ``shipway.yaml`` (``shipway apply``)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Path, Request
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, Field
from starlette.datastructures import UploadFile

from shipway.api.deps import ContainerDep, Deployer, Viewer
from shipway.api.errors import responses
from shipway.api.schemas import MAX_INT32
from shipway.errors import InvalidInput
from shipway.gitops.spec import SPEC_NAME
from shipway.services import gitops

router = APIRouter(tags=["gitops"])
MAX_SPEC_NAME = 300


class ActionOut(BaseModel):
    kind: str = Field(
        description="register-version, version, create-build, build, build-failed, deploy, "
        "start-rollout, wait-for-build, cancel-intent, deployment, rollout, update-scaling, "
        "set-drift-policy, blocked"
    )
    target: str = Field(description="What it acts on: model/<name>, build/<spec build>, ...")
    detail: str
    changed: bool = Field(description="It writes something (false: as it is, or reported)")
    build: str | None = Field(None, description="The spec's build name it concerns")
    build_id: str | None = None
    version: int | None = None
    deployment: str | None = None
    after_build: bool = Field(
        False, description="Waits for the build to succeed; carried out by the server then"
    )
    intent_id: int | None = None
    rollout_id: str | None = None
    then: str | None = Field(
        None, description="deploy or rollout: what a deploy, start-rollout or wait-for-build does"
    )


class PlanOut(BaseModel):
    model: str
    changed: bool = Field(description="false: nothing was (or, dry run: would be) written")
    dry_run: bool
    problems: list[str] = Field(
        description="What keeps the platform from matching the spec, one line each: a "
        "failed build (retry with retry_failed), a blocked deploy or rollout. Empty and "
        "changed false: the platform matches the spec already"
    )
    actions: list[ActionOut]


@router.post(
    "/apply",
    response_model=PlanOut,
    responses=responses(400, 403, 404, 409, 422, 503),
    openapi_extra={
        "requestBody": {
            "content": {
                "multipart/form-data": {
                    "schema": {
                        "type": "object",
                        "required": ["spec"],
                        "properties": {
                            "spec": {"type": "string", "description": "shipway.yaml's text"},
                            "spec_name": {
                                "type": "string",
                                "maxLength": MAX_SPEC_NAME,
                                "default": SPEC_NAME,
                                "description": "The spec file's name, which errors start "
                                "with (int8.yaml line 9: ...)",
                            },
                            "dry_run": {"type": "boolean", "default": False},
                            "retry_failed": {"type": "boolean", "default": False},
                        },
                        "additionalProperties": {
                            "type": "string",
                            "format": "binary",
                            "description": "One part per file the spec names; the part's "
                            "filename is the path as the spec writes it (curl: "
                            "-F 'f=@model/m.onnx;filename=model/m.onnx')",
                        },
                    }
                }
            },
            "required": True,
        }
    },
)
async def apply(
    request: Request,
    container: ContainerDep,
    caller: Deployer,
    spec: Annotated[
        str | None, Form(description="The text of shipway.yaml (required; may be empty)")
    ] = None,
    spec_name: Annotated[
        str,
        Form(
            max_length=MAX_SPEC_NAME,
            description="The spec file's name, which errors start with (`int8.yaml line 9: ...`)",
        ),
    ] = SPEC_NAME,
    dry_run: Annotated[bool, Form(description="Plan only; change nothing")] = False,
    retry_failed: Annotated[
        bool, Form(description="Queue a build that failed again from the same inputs")
    ] = False,
) -> PlanOut:
    """Make the platform match a `shipway.yaml` and answer the plan.

    Multipart: `spec` is the YAML text; each file the spec names (model.onnx,
    model.sample, model.calibration) is one file part whose filename is the path as the
    spec writes it (with curl, which sends the base name only, give it:
    `-F "onnx=@model/m.onnx;filename=model/m.onnx"`). Idempotent: a second apply of the
    same spec answers `changed: false`. Deploys and rollouts that wait for a build are
    carried out by the server once it succeeds. 422 for a spec error (naming the field
    and line) or a missing file part (naming the path); 409 when the new build would
    break the serving build's clients (set deployment.allowSignatureChange) or another
    apply of the model still runs after 60 s; nothing is written in any of these cases."""
    if not spec_name.strip() or not spec_name.isprintable():
        raise InvalidInput("spec_name: must be a file name of printable characters")
    form = await request.form()
    if spec is None:  # FastAPI reads an empty form field as none: a 0-byte spec file
        if "spec" not in form:
            raise InvalidInput("spec: required, missing (the text of shipway.yaml)")
        spec = ""
    parts: dict[str, bytes] = {}
    for _, value in form.multi_items():
        if isinstance(value, UploadFile) and value.filename:
            if value.filename in parts:
                raise InvalidInput(f"two file parts are named {value.filename!r}")
            parts[value.filename] = await value.read()

    def read(path: str) -> bytes:
        if path not in parts:
            raise InvalidInput(
                f"the spec names {path!r}, but no file part has that filename "
                "(send each file the spec names as a part whose filename is its path)"
            )
        return parts[path]

    source = gitops.SpecSource(spec, read, "api", spec_name)
    plan = await run_in_threadpool(
        gitops.apply,
        container,
        source,
        dry_run=dry_run,
        actor=caller.actor,
        retry_failed=retry_failed,
    )
    return PlanOut.model_validate(plan.to_dict())


class IntentOut(BaseModel):
    id: int
    deployment: str
    build_id: str
    action: str = Field(description="deploy or rollout")
    status: str = Field(description="pending, running, done, failed or cancelled")
    message: str | None


@router.get("/apply/intents/{intent_id}", response_model=IntentOut, responses=responses(404, 422))
def intent(
    intent_id: Annotated[int, Path(ge=1, le=MAX_INT32)], container: ContainerDep, _: Viewer
) -> IntentOut:
    """A deploy or rollout that waits for a build (`after_build` in a plan): whether the
    server has carried it out (`done`), could not (`failed`, with the reason) or waits."""
    return IntentOut.model_validate(gitops.get_intent(container, intent_id), from_attributes=True)
