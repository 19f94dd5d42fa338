"""Every answer the gateway gives counts once: ``shipway_gateway_responses_total`` by
class, and the latency histogram, against real tritonservers — a replica's 2xx, 4xx and
5xx, the gateway's own 400 and 404, a slow model's timeout, a killed replica, a
deployment with no ready replica."""

from __future__ import annotations

import os
import shutil
import signal
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from shipway.gateway.routing import DeploymentRoute, ReplicaRoute, RoutingTable, VariantRoute
from shipway.runtime.triton_distribution import TritonDistribution
from shipway.runtime.triton_process import TritonProcess
from shipway.settings import Settings
from tests.support.builds import CONFIG, FLAKY, WIDTH
from tests.support.gateway import answers, gateway_series, running_gateway, timed
from tests.support.services import wait_until

pytestmark = pytest.mark.integration

TIMEOUT_S = 1.5  # the gateway's per-request timeout in these tests
SLOW_MS = 5000  # the slow model's sleep: well past the timeout


def write_model(repo: Path, name: str, fail_share: float = 0.0, sleep_ms: float = 0.0) -> None:
    """The flaky test model (y = 2x) under ``name``, failing or sleeping as told."""
    (repo / name / "1").mkdir(parents=True)
    shutil.copy(FLAKY, repo / name / "1" / "model.py")
    (repo / name / "config.pbtxt").write_text(
        CONFIG.format(
            name=name, width=WIDTH, fail_share=fail_share, sleep_ms=sleep_ms, sleep_share=1
        )
    )


@contextmanager
def serving(dist: TritonDistribution, repo: Path, log: Path) -> Iterator[TritonProcess]:
    process = TritonProcess(dist, repo, log)
    process.start()
    try:
        process.wait_ready(120)
        yield process
    finally:
        process.stop()


def row(name: str = "x") -> dict[str, object]:
    return {"inputs": [{"name": name, "shape": [1, WIDTH], "datatype": "FP32", "data": [1.0, 2.0]}]}


def test_each_answer_is_counted_once_by_class(
    tmp_path: Path, triton_dist: TritonDistribution
) -> None:
    repo, doomed_repo = tmp_path / "repo", tmp_path / "doomed-repo"
    write_model(repo, "ok")
    write_model(repo, "failing", fail_share=1.0)
    write_model(repo, "slow", sleep_ms=SLOW_MS)
    write_model(doomed_repo, "ok")
    with (
        serving(triton_dist, repo, tmp_path / "triton.log") as triton,
        serving(triton_dist, doomed_repo, tmp_path / "doomed.log") as doomed,
    ):
        port = doomed.url.rsplit(":", 1)[1]
        table = RoutingTable(
            {
                "web": DeploymentRoute(
                    "web",
                    (
                        VariantRoute("stable", 50, (ReplicaRoute(triton.url, "ok", 1),)),
                        VariantRoute("canary", 50, (ReplicaRoute(triton.url, "failing", 2),)),
                    ),
                ),
                "slow": DeploymentRoute(
                    "slow", (VariantRoute("stable", 100, (ReplicaRoute(triton.url, "slow", 1),)),)
                ),
                # Two addresses of one killed server: the retry fails too.
                "dead": DeploymentRoute(
                    "dead",
                    (
                        VariantRoute(
                            "stable",
                            100,
                            (
                                ReplicaRoute(doomed.url, "ok", 1),
                                ReplicaRoute(f"http://localhost:{port}", "ok", 1),
                            ),
                        ),
                    ),
                ),
                "cold": DeploymentRoute("cold", (VariantRoute("stable", 100, ()),)),
            }
        )
        assert doomed.pid is not None
        os.kill(doomed.pid, signal.SIGKILL)
        wait_until(lambda: not doomed.alive(), 30, "the killed replica to be gone")

        settings = Settings(home=tmp_path, gateway_timeout=TIMEOUT_S, health_check_seconds=0.3)
        with (
            running_gateway(settings, lambda: table) as (url, gateway),
            httpx.Client(base_url=url, timeout=30) as client,
        ):
            gateway.rng.seed(3)  # the split of "web" between its arms: drawn, then counted
            codes: Counter[tuple[str, int, str]] = Counter()

            def send(deployment: str, body: object, path: str = "infer", **kw: object) -> None:
                response = client.post(f"/v2/models/{deployment}/{path}", json=body, **kw)  # type: ignore[arg-type]
                assert response.headers["content-type"] == "application/json"
                assert "error" in response.json() or response.status_code == 200
                variant = response.headers.get("x-shipway-variant", "")
                codes[(deployment, response.status_code, variant)] += 1

            for _ in range(8):
                send("web", row())  # 200 from stable or 500 from canary
            for _ in range(3):
                send("web", row("renamed"))  # Triton's 400: no input "x"
            send("web", {"inputs": "x"})  # the gateway's 400: malformed, no variant chosen
            send("web", row(), "versions/9/infer")  # the gateway's 404: version 9 not served
            send("web", row(), "versions/1/infer")  # pinned: only stable serves version 1
            for _ in range(2):
                send("slow", row())  # 504 after the timeout
            for _ in range(3):
                send("dead", row())  # 502 after the retry
            for _ in range(2):
                send("cold", row())  # 503: no ready replica
            send("nowhere", row())  # no deployment: counted under no_route only

            web = {k: n for k, n in codes.items() if k[0] == "web"}
            # Renamed inputs fail on either arm with 400 (the canary fails only when it runs).
            stable_ok = codes[("web", 200, "stable")]
            canary_500 = codes[("web", 500, "canary")]
            assert stable_ok + canary_500 == 8 + 1 and stable_ok >= 1 and canary_500 >= 1, web
            renamed = {v: codes[("web", 400, v)] for v in ("stable", "canary")}
            assert sum(renamed.values()) == 3, web
            assert codes[("web", 400, "")] == 1 and codes[("web", 404, "")] == 1
            assert codes[("slow", 504, "stable")] == 2
            assert codes[("dead", 502, "stable")] == 3
            assert codes[("cold", 503, "")] == 2
            assert codes[("nowhere", 404, "")] == 1

            expected = {
                "web": {
                    ("stable", "2xx"): stable_ok,
                    ("canary", "5xx"): canary_500,
                    ("", "4xx"): 2,
                    **{(v, "4xx"): n for v, n in renamed.items() if n},
                },
                "slow": {("stable", "upstream_timeout"): 2},
                "dead": {("stable", "connection_reset"): 3},
                "cold": {("", "no_ready_replica"): 2},
            }
            wait_until(
                lambda: all(answers(url, d) == e for d, e in expected.items()),
                30,
                "every answer counted",
            )
            for deployment, counted in expected.items():
                assert answers(url, deployment) == counted  # once each, nothing more
                # the latency histogram times good answers only: a fast refusal or
                # failure must not make a variant look fast
                per_variant: Counter[str] = Counter()
                for (variant, kind), n in counted.items():
                    if kind == "2xx":
                        per_variant[variant] += n
                observed = {v: n for v, n in timed(url, deployment).items() if n}
                assert observed == dict(per_variant), deployment
            assert answers(url, "nowhere") == {}
            assert answers(url, "(unknown)") == {}
            # Each of the 3 dead answers retried once on the other address.
            retries = gateway_series(url, "shipway_gateway_retries_total", "dead")
            assert retries == {(("variant", "stable"),): 3.0}
            # The upstream-attempt family is unchanged: the killed replica's attempts are
            # connection errors, no code; the gateway's own 502s are not in it.
            attempts = gateway_series(url, "shipway_gateway_requests_total", "dead")
            assert attempts == {}
