from __future__ import annotations

from collections import Counter

from shipway.gateway.routing import Endpoint, RoutingTable


def test_round_robin_over_ready_replicas() -> None:
    a, b = Endpoint("http://a", "m"), Endpoint("http://b", "m")
    table = RoutingTable.build([("d", b), ("d", a), ("other", a)])
    picks = Counter(table.pick("d").url for _ in range(10))  # type: ignore[union-attr]
    assert picks == {"http://a": 5, "http://b": 5}


def test_unknown_deployment_has_no_route() -> None:
    assert RoutingTable.build([]).pick("nope") is None


def test_tables_compare_by_routes_only() -> None:
    one = RoutingTable.build([("d", Endpoint("http://a", "m"))])
    two = RoutingTable.build([("d", Endpoint("http://a", "m"))])
    one.pick("d")
    assert one == two
    assert one != RoutingTable.build([("d", Endpoint("http://b", "m"))])
