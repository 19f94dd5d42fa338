"""Say which build a deployment should serve; the runtime manager makes it so."""

from __future__ import annotations

from sqlalchemy import select

from shipway import audit
from shipway.container import Container
from shipway.errors import Conflict, NotFound
from shipway.services.models import check_name
from shipway.store.models import Build, BuildStatus, Deployment, DeploymentStatus


def deploy(container: Container, name: str, build_id: str, actor: str) -> Deployment:
    check_name(name)
    with container.db.session() as session:
        build = session.get(Build, build_id)
        if build is None:
            raise NotFound(f"build {build_id!r} does not exist")
        if build.status != BuildStatus.SUCCEEDED:
            raise Conflict(f"build {build_id} is {build.status}; only a succeeded build deploys")
        deployment = session.scalar(select(Deployment).where(Deployment.name == name))
        previous = deployment.build_id if deployment else None
        if deployment is None:
            deployment = Deployment(name=name, build_id=build_id)
            session.add(deployment)
        elif previous != build_id:
            deployment.build_id = build_id
            deployment.status, deployment.message = DeploymentStatus.PENDING, None
        audit.record(
            session,
            actor,
            "deployment.set",
            f"deployment/{name}",
            build=build_id,
            previous_build=previous,
        )
    return get(container, name)


def get(container: Container, name: str) -> Deployment:
    with container.db.session() as session:
        deployment = session.scalar(select(Deployment).where(Deployment.name == name))
        if deployment is None:
            raise NotFound(f"deployment {name!r} does not exist")
        return deployment


def list_deployments(container: Container) -> list[Deployment]:
    with container.db.session() as session:
        return list(session.scalars(select(Deployment).order_by(Deployment.name)))


def delete(container: Container, name: str, actor: str) -> None:
    with container.db.session() as session:
        deployment = session.scalar(select(Deployment).where(Deployment.name == name))
        if deployment is None:
            raise NotFound(f"deployment {name!r} does not exist")
        session.delete(deployment)
        audit.record(session, actor, "deployment.delete", f"deployment/{name}")
