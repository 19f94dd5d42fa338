from __future__ import annotations

import random
from collections import Counter

import pytest

from shipway.gateway.routing import DeploymentRoute, ReplicaRoute, RoutingTable, VariantRoute

R = (ReplicaRoute("http://a", "m"),)


def route(weights: dict[str, int], sticky: bool = False) -> DeploymentRoute:
    return DeploymentRoute(
        "d", tuple(VariantRoute(n, w, R) for n, w in weights.items()), sticky=sticky
    )


def test_sticky_keys_always_land_on_one_arm_and_split_by_weight() -> None:
    """10,000 keys: each key always gets the same arm; shares within ±2 % of weights."""
    d = route({"a": 50, "b": 30, "c": 20}, sticky=True)
    rng = random.Random(1)
    keys = [f"user-{i}" for i in range(10_000)]
    first = {k: d.choose(k, rng.random()).name for k in keys}  # type: ignore[union-attr]
    for _ in range(3):  # the draw never matters for a keyed request
        assert all(d.choose(k, rng.random()).name == arm for k, arm in first.items())  # type: ignore[union-attr]
    shares = Counter(first.values())
    for arm, weight in {"a": 50, "b": 30, "c": 20}.items():
        assert abs(shares[arm] / len(keys) * 100 - weight) <= 2.0, shares


def test_sticky_assignment_survives_a_table_rebuild() -> None:
    one, two = route({"a": 50, "b": 50}, True), route({"a": 50, "b": 50}, True)
    assert all(one.choose(f"k{i}", 0.0) == two.choose(f"k{i}", 0.9) for i in range(500))


def test_weighted_split_follows_the_draw() -> None:
    d = route({"stable": 90, "canary": 10})
    assert d.choose(None, 0.0).name == "stable"  # type: ignore[union-attr]
    assert d.choose(None, 0.899).name == "stable"  # type: ignore[union-attr]
    assert d.choose(None, 0.9).name == "canary"  # type: ignore[union-attr]
    rng = random.Random(7)
    shares = Counter(d.choose(None, rng.random()).name for _ in range(20_000))  # type: ignore[union-attr]
    assert abs(shares["canary"] / 20_000 - 0.10) < 0.01


def test_weighted_deployment_ignores_keys() -> None:
    d = route({"a": 50, "b": 50})
    assert {d.choose("same-key", x / 10).name for x in range(10)} == {"a", "b"}  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("variants", "expected"),
    [
        ((VariantRoute("a", 100, ()), VariantRoute("b", 0, R)), None),  # no ready replica
        ((VariantRoute("a", 100, ()), VariantRoute("b", 10, R)), "b"),  # the ready one takes all
        ((), None),
    ],
)
def test_only_variants_with_weight_and_replicas_serve(variants, expected) -> None:  # type: ignore[no-untyped-def]
    chosen = DeploymentRoute("d", variants).choose(None, 0.3)
    assert (chosen.name if chosen else None) == expected


def test_shadows_and_table_lookup() -> None:
    d = DeploymentRoute("d", (VariantRoute("s", 100, R), VariantRoute("sh", 0, R, 0.5)))
    assert [v.name for v in d.shadows()] == ["sh"]
    table = RoutingTable({"d": d})
    assert table.get("d") is d and table.get("x") is None
    assert table.replica_urls() == {"http://a"}


def test_versions_and_pinned_requests() -> None:
    """A pinned request sees only replicas of its version; variants without any drop out
    and the rest keep their weights (a variant in a build change serves two versions)."""
    v1, v2 = ReplicaRoute("http://a", "m-1", 1), ReplicaRoute("http://b", "m-2", 2)
    v2_too = ReplicaRoute("http://c", "m-2", 2)
    d = DeploymentRoute(
        "d",
        (
            VariantRoute("stable", 60, (v1, v2_too)),
            VariantRoute("canary", 40, (v2,)),
            VariantRoute("shadow", 0, (ReplicaRoute("http://s", "m-3", 3),), shadow_share=1.0),
            VariantRoute("cold", 10, ()),
        ),
    )
    assert d.versions() == (1, 2)  # the shadow's 3 takes no live traffic
    one = d.pinned(1)
    assert [v.name for v in one.serving()] == ["stable"]
    assert one.choose(None, 0.99).replicas == (v1,)  # type: ignore[union-attr]
    two = d.pinned(2)
    assert [(v.name, v.weight, v.replicas) for v in two.serving()] == [
        ("stable", 60, (v2_too,)),
        ("canary", 40, (v2,)),
    ]
    assert two.choose(None, 0.5).name == "stable" and two.choose(None, 0.6).name == "canary"  # type: ignore[union-attr]
    assert d.pinned(3).serving() == () and d.pinned(3).choose(None, 0.1) is None
    assert d.pinned(3).shadows() != ()  # shadows keep their version's replicas
    assert DeploymentRoute("d", (VariantRoute("s", 100, R),)).versions() == ()  # unknown
