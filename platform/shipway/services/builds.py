"""Create and read builds. A build row is committed before its task is sent, so a
worker never sees a build id that the store does not have."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from shipway import audit
from shipway.builds import recipes
from shipway.builds.celery_app import enqueue_build
from shipway.container import Container
from shipway.errors import NotFound, Unavailable
from shipway.services.models import get_version
from shipway.store.models import Build, BuildStatus


def create(
    container: Container,
    model: str,
    version: int,
    recipe: str,
    target: str,
    actor: str,
    options: dict[str, Any] | None = None,
) -> Build:
    parsed_recipe, parsed_target = recipes.parse(recipe, target)
    parsed_options = recipes.BuildOptions.from_dict(options)
    parsed_options.check(parsed_recipe, parsed_target)
    model_version = get_version(container, model, version)
    # MLflow state may have changed behind Shipway's back: refuse now, naming it,
    # rather than queue a build that cannot fetch its model.
    container.registry.check_version(model, version, model_version.mlflow_run_id)
    with container.db.session() as session:
        build = Build(
            model_version_id=model_version.id,
            recipe=parsed_recipe,
            target=parsed_target,
            options=parsed_options.to_dict(),
        )
        session.add(build)
        session.flush()
        audit.record(
            session,
            actor,
            "build.create",
            f"build/{build.id}",
            model=model,
            version=version,
            recipe=recipe,
            target=target,
            options=parsed_options.to_dict(),
        )
        build_id = build.id
    try:
        enqueue_build(container.celery, build_id)
    except Exception as exc:  # broker down: the build must not sit "queued" forever
        with container.db.session() as session:
            row = session.get(Build, build_id)
            assert row is not None
            row.status, row.error = BuildStatus.FAILED, f"could not enqueue: {exc}"
        raise Unavailable(f"the build queue is not reachable: {exc}") from exc
    return get(container, build_id)


def get(container: Container, build_id: str) -> Build:
    with container.db.session() as session:
        build = session.get(Build, build_id)
        if build is None:
            raise NotFound(f"build {build_id!r} does not exist")
        return build


def list_builds(container: Container, limit: int = 100) -> list[Build]:
    with container.db.session() as session:
        return list(session.scalars(select(Build).order_by(Build.created_at.desc()).limit(limit)))
