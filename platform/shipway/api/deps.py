"""Request dependencies: the process's container and the caller's identity."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, HTTPException, Path, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from shipway.api.schemas import ID_PATTERN, NAME_PATTERN
from shipway.container import Container
from shipway.settings import Role

_RANK = {Role.VIEWER: 0, Role.DEPLOYER: 1, Role.ADMIN: 2}
_bearer = HTTPBearer(auto_error=False)


@dataclass(frozen=True)
class Caller:
    token_hint: str  # first characters only: audit trails must not hold secrets
    role: Role

    @property
    def actor(self) -> str:
        return f"{self.role.value}:{self.token_hint}"


def get_container(request: Request) -> Container:
    return request.app.state.container


def get_caller(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Caller:
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise HTTPException(401, "missing bearer token", headers={"WWW-Authenticate": "Bearer"})
    role = get_container(request).settings.api_tokens.get(credentials.credentials)
    if role is None:
        raise HTTPException(401, "unknown token", headers={"WWW-Authenticate": "Bearer"})
    return Caller(credentials.credentials[:6] + "…", role)


def require(minimum: Role):  # type: ignore[no-untyped-def]
    def check(caller: Annotated[Caller, Depends(get_caller)]) -> Caller:
        if _RANK[caller.role] < _RANK[minimum]:
            raise HTTPException(
                403, f"role {caller.role.value!r} may not do this; needs {minimum.value!r}"
            )
        return caller

    return check


ContainerDep = Annotated[Container, Depends(get_container)]
Viewer = Annotated[Caller, Depends(require(Role.VIEWER))]
Deployer = Annotated[Caller, Depends(require(Role.DEPLOYER))]

# Path parameters, with the constraints the document states.
NamePath = Annotated[str, Path(pattern=NAME_PATTERN, max_length=63)]
IdPath = Annotated[str, Path(pattern=ID_PATTERN)]
