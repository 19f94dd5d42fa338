from __future__ import annotations

import random
from collections import Counter

from shipway.gateway.balancer import Balancer, EjectionPolicy

URLS = ["http://a", "http://b", "http://c"]


def test_power_of_two_choices_prefers_the_less_busy_replica() -> None:
    b = Balancer(rng=random.Random(3))
    for _ in range(5):
        b.started("http://a")
    picks = Counter(b.pick(URLS, now=0.0) for _ in range(3000))
    # "a" is busier than both others, so it loses every pairing it is drawn into.
    assert picks["http://a"] == 0
    assert picks["http://b"] > 1000 and picks["http://c"] > 1000


def test_consecutive_failures_eject_then_readmit_with_backoff() -> None:
    b = Balancer(EjectionPolicy(consecutive_failures=3, base_seconds=2.0, max_seconds=5.0))
    for _ in range(2):
        b.started("http://a")
        b.finished("http://a", failed=True, now=10.0)
    assert b.health("http://a").available(10.0)  # two failures: still in
    b.started("http://a")
    b.finished("http://a", failed=True, now=10.0)
    assert not b.health("http://a").available(11.9)
    assert "http://a" not in {b.pick(URLS, 11.0) for _ in range(50)}
    assert b.health("http://a").available(12.0)  # re-admitted after 2 s

    # On probation: the first failure after re-admission ejects again, for twice as long.
    b.finished("http://a", failed=True, now=12.0)
    assert not b.health("http://a").available(15.9) and b.health("http://a").available(16.0)
    b.finished("http://a", failed=True, now=16.0)  # and the period is capped
    assert not b.health("http://a").available(20.9) and b.health("http://a").available(21.0)


def test_one_good_answer_ends_probation() -> None:
    b = Balancer(EjectionPolicy(consecutive_failures=2, base_seconds=1.0))
    for _ in range(2):
        b.finished("http://a", failed=True, now=0.0)
    assert not b.health("http://a").available(0.5)
    b.finished("http://a", failed=False, now=1.0)  # re-admitted and answered well
    b.finished("http://a", failed=True, now=1.0)
    assert b.health("http://a").available(1.0)  # back to needing 2 failures in a row
    b.finished("http://a", failed=True, now=1.0)
    assert not b.health("http://a").available(1.5) and b.health("http://a").available(2.0)


def test_a_success_resets_the_failure_count() -> None:
    b = Balancer(EjectionPolicy(consecutive_failures=2))
    b.finished("http://a", failed=True, now=0.0)
    b.finished("http://a", failed=False, now=0.0)
    b.finished("http://a", failed=True, now=0.0)
    assert b.health("http://a").available(0.0)


def test_failed_health_checks_take_a_replica_out() -> None:
    b = Balancer()
    b.checked("http://b", healthy=False)
    assert "http://b" not in {b.pick(URLS, 0.0) for _ in range(100)}
    b.checked("http://b", healthy=True)
    assert "http://b" in {b.pick(URLS, 0.0) for _ in range(100)}


def test_panic_mode_and_exclusion() -> None:
    b = Balancer()
    for url in URLS:
        b.checked(url, healthy=False)
    assert b.pick(URLS, 0.0) in URLS  # all out: try anyway rather than refuse everything
    assert b.pick(["http://a"], 0.0, exclude="http://a") is None
    assert b.pick(URLS, 0.0, exclude="http://a") in ("http://b", "http://c")


def test_forget_keeps_busy_replicas() -> None:
    b = Balancer()
    b.started("http://a")
    b.health("http://b")
    b.forget_except(set())
    assert set(b.replicas) == {"http://a"}
