"""The ``spec.routing`` fields of Gateway API routing, as typed data (pure pydantic).

Apart from ``spec.py`` so that both it (``Routing.gateway_api``) and ``httproute`` import
them without a cycle (``httproute`` needs ``spec``). Field names are the CRD's camelCase
ones (aliases), as in ``spec.py``; the CRD validates the same bounds (and host names,
which are left to it and to the HTTPRoute's own schema here).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

COHORT_HEADER = "x-shipway-variant"


class _Model(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, frozen=True)


class ParentRef(_Model):
    """A Gateway (or a listener of one, ``sectionName``) the route attaches to; its
    namespace defaults to the route's. The Gateway must allow routes from this namespace
    (``allowedRoutes``)."""

    name: str = Field(min_length=1, max_length=253)
    namespace: str | None = Field(None, min_length=1, max_length=63)
    section_name: str | None = Field(None, min_length=1, max_length=253)

    def as_manifest(self) -> dict[str, Any]:
        ref: dict[str, Any] = {"group": "gateway.networking.k8s.io", "kind": "Gateway"}
        return ref | self.model_dump(by_alias=True, exclude_none=True)


class GatewayAPIRouting(_Model):
    """``spec.routing.gatewayAPI``: where the route attaches, for which host names, and
    the request header that names a cohort during an A/B split."""

    parent_refs: tuple[ParentRef, ...] = Field(min_length=1, max_length=32)
    hostnames: tuple[str, ...] = Field((), max_length=16)
    cohort_header: str = Field(COHORT_HEADER, pattern=r"^x-[a-z0-9-]+$", max_length=63)
