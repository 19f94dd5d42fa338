"""Automatic rollback: how fast a failing canary is taken back, at what cost in failed
requests, and whether healthy canaries are left alone with the same settings.

The control plane runs as in production on one machine: the API process with its
rollout controller (product defaults: a tick of 0.5 s, the gateway re-reading routes
every second), the runtime manager with real tritonserver replicas, the gateway.
Steady load (RATE requests a second from 4 paced clients) goes through the gateway.

1. A canary whose served model fails FAIL_SHARE of its requests (the fault is in the
   model: tests/support/models/flaky), steps 20/50/100 %, a 1-second analysis
   interval, 2 failed analyses in a row roll back.
   - detect_seconds: the first failed answer a client saw (fault onset) to the
     controller's rollback decision (its audit event);
   - rollback_seconds: fault onset to the last answer from the canary (after it, 100 %
     of traffic is stable);
   - failed_requests, and failed_share_bound: failed ÷ (requests while the canary
     served x its weight). At most FAIL_SHARE / 1 means no failure beyond the
     canary's share; above 1 would mean failures outside it.
2. A canary that refuses its clients' requests: the same graph with its input renamed
   (clients keep sending the old name, so every request it gets is answered 400),
   rolled out with allow_signature_change; 4xx are judged relative to stable's.
   - rollback_seconds_4xx: the first 400 a client saw to the last answer from the
     canary; detect_seconds_4xx to the controller's decision;
   - failed_share_bound_4xx: refused ÷ (requests while the canary served x its
     weight); the canary refuses everything it gets, so about 1 means no refusal
     beyond its share (refused_outside_canary counts any, target 0).
3. Ten canaries of healthy builds, the same settings, one after the other:
   healthy_rollbacks counts those wrongly rolled back (target 0).

With ``--kubernetes``: the failing canary (1) on the local control plane, then the same
canary on Kubernetes — the test cluster (tests/kube: real API server, controller
manager, scheduler; real Triton in every pod through the stand-in kubelet), the
operator's rollout loop judging the gateway's counters from a real Prometheus (scraped
every second), the in-cluster Shipway gateway routing by the resources and
EndpointSlices — with the same steps, interval, failure limit, rate and model. The last
line then holds both: ``{"local": {...}, "kubernetes": {...}}`` with ``detect_seconds``
(first failed answer to the decision: the analysis time the record keeps) and
``rollback_seconds`` (first failed answer to the canary's last answer) each.

Run: .venv/bin/python benchmarks/rollback.py [--kubernetes]
Last line: one JSON object.
"""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.support.builds import publish_flaky_build, real_build, register_doubler
from tests.support.load import steady_load
from tests.support.plane import Plane, local_plane, stamp
from tests.support.services import wait_until

from shipway.settings import Settings

RATE = 100.0
FAIL_SHARE = 0.3
WEIGHT = 20
HEALTHY_RUNS = 10
SETTINGS = {
    "steps": [WEIGHT, 50, 100],
    "interval_s": 1.0,
    "failure_threshold": 2,
    "thresholds": {"min_requests": 10},
}


def run_rollout(plane: Plane, build_id: str, allow: bool = False) -> dict:  # type: ignore[type-arg]
    with plane.client() as client:
        body = {"build_id": build_id, "strategy": "canary", "settings": SETTINGS}
        started = client.start_rollout("bench", {**body, "allow_signature_change": allow})
        body: dict = {}  # type: ignore[type-arg]

        def finished() -> bool:
            body.update(client.rollout("bench", started["id"]))
            return not body["running"]

        wait_until(finished, 180, "the rollout to finish")
        return body


def failing_canary_local() -> dict:  # type: ignore[type-arg]
    """The failing canary on the local control plane: detect and rollback seconds."""
    with (
        tempfile.TemporaryDirectory() as tmp,
        local_plane(Path(tmp) / "home", Settings().triton_home, rollout_tick_seconds=0.5) as plane,
    ):
        versions = [register_doubler(plane.container, "bench") for _ in range(2)]
        stable = publish_flaky_build(plane.container, versions[0])
        failing = publish_flaky_build(plane.container, versions[1], fail_share=FAIL_SHARE)
        plane.deploy("bench", stable)
        with steady_load(plane.settings.gateway_url, "bench", rate=RATE) as load:
            time.sleep(2)
            bad = run_rollout(plane, failing)
            time.sleep(3)
        assert bad["phase"] == "rolled-back", bad
        decision = next(e for e in bad["timeline"] if e["event"] == "rollout.rolled-back")
        return _figures(load, stamp(decision["at"]))


def _figures(load, decided_at: float) -> dict:  # type: ignore[no-untyped-def, type-arg]
    failed = load.failed()
    canary = [a for a in load.answers if a.variant == "canary"]
    onset = min(a.at for a in failed)
    during = [a for a in load.answers if canary[0].at <= a.at <= canary[-1].at]
    return {
        "detect_seconds": round(decided_at - onset, 2),
        "rollback_seconds": round(canary[-1].at - onset, 2),
        "failed_requests": len(failed),
        "failed_share_bound": round(len(failed) / (len(during) * WEIGHT / 100), 3),
        "failed_outside_canary": sum(a.variant != "canary" for a in failed),
        "canary_requests": len(canary),
    }


def failing_canary_kubernetes(workdir: Path) -> dict:  # type: ignore[type-arg]
    """The same canary on the test cluster, with Prometheus in the loop."""
    from tests.kube.cluster import Binaries, TestCluster, wait_for
    from tests.kube.fixtures import OPERATOR_CRDS
    from tests.kube.kubelet import TritonKubelet
    from tests.support.kubeplane import kube_plane
    from tests.support.repositories import ArchiveServer

    from shipway.runtime.triton_distribution import TritonDistribution
    from shipway_operator.rollout_status import from_time

    canary = {
        "strategy": "canary",
        "canary": {
            "stepWeights": SETTINGS["steps"],
            "intervalSeconds": int(SETTINGS["interval_s"]),
            "checksPerStep": 1,
            "failureLimit": SETTINGS["failure_threshold"],
            "thresholds": {"minRequests": SETTINGS["thresholds"]["min_requests"]},
        },
    }
    binaries = Binaries.default()
    with (
        TestCluster(workdir / "kube", binaries) as cluster,
        TritonKubelet(
            cluster.api_client(), TritonDistribution(Settings().triton_home), workdir / "kubelet"
        ) as _kubelet,
        ArchiveServer() as archives,
    ):
        cluster.install_crds([*binaries.gateway_api_crds(), *sorted(OPERATOR_CRDS.glob("*.yaml"))])
        with kube_plane(cluster, archives, workdir / "plane") as plane:
            plane.deploy("bench", plane.build("bench-b1", 1), canary)
            plane.wait_serving("bench")
            with steady_load(plane.gateway_url, "bench", rate=RATE) as load:
                time.sleep(2)
                plane.set_build("bench", plane.build("bench-b2", 2, fail_share=FAIL_SHARE))
                record = wait_for(
                    lambda: (r := plane.record("bench")).get("finished") and r, 300, "rollback"
                )
                time.sleep(3)
            assert record["phase"] == "RolledBack", record
            figures = _figures(load, from_time(record["state"]["lastAnalysisAt"]))
            figures["reason"] = record["state"]["reason"]
            return figures


def main() -> None:
    if "--kubernetes" in sys.argv[1:]:
        local = failing_canary_local()
        print(json.dumps({"local": local}), flush=True)
        with tempfile.TemporaryDirectory() as tmp:
            kubernetes = failing_canary_kubernetes(Path(tmp))
        print(json.dumps({"local": local, "kubernetes": kubernetes, "rate_rps": RATE}))
        return
    with (
        tempfile.TemporaryDirectory() as tmp,
        local_plane(Path(tmp) / "home", Settings().triton_home, rollout_tick_seconds=0.5) as plane,
    ):
        versions = [register_doubler(plane.container, "bench") for _ in range(2 + HEALTHY_RUNS)]
        stable = publish_flaky_build(plane.container, versions[0])
        failing = publish_flaky_build(plane.container, versions[1], fail_share=FAIL_SHARE)
        plane.deploy("bench", stable)

        with steady_load(plane.settings.gateway_url, "bench", rate=RATE) as load:
            time.sleep(2)
            bad = run_rollout(plane, failing)
            time.sleep(3)  # enough for any straggler to show
        assert bad["phase"] == "rolled-back", bad
        decision = next(e for e in bad["timeline"] if e["event"] == "rollout.rolled-back")
        failed = load.failed()
        canary = [a for a in load.answers if a.variant == "canary"]
        onset = min(a.at for a in failed)
        during = [a for a in load.answers if canary[0].at <= a.at <= canary[-1].at]
        result = {
            "detect_seconds": round(stamp(decision["at"]) - onset, 2),
            "rollback_seconds": round(canary[-1].at - onset, 2),
            "failed_requests": len(failed),
            "failed_share_bound": round(len(failed) / (len(during) * WEIGHT / 100), 3),
            "fail_share": FAIL_SHARE,
            "failed_outside_canary": sum(a.variant != "canary" for a in failed),
            "requests_while_canary_served": len(during),
            "canary_requests": len(canary),
        }
        print(json.dumps({"failing_canary": result, "reason": bad["reason"]}), flush=True)

        renamed = register_doubler(plane.container, "bench", input_name="features")
        refusing = real_build(plane.container, renamed)
        with steady_load(plane.settings.gateway_url, "bench", rate=RATE) as load:
            time.sleep(2)
            bad = run_rollout(plane, refusing, allow=True)
            time.sleep(3)
        assert bad["phase"] == "rolled-back" and "client_error_excess" in bad["reason"], bad
        decision = next(e for e in bad["timeline"] if e["event"] == "rollout.rolled-back")
        refused = [a for a in load.answers if 400 <= a.status < 500]
        canary = [a for a in load.answers if a.variant == "canary"]
        onset = min(a.at for a in refused)
        during = [a for a in load.answers if canary[0].at <= a.at <= canary[-1].at]
        result["detect_seconds_4xx"] = round(stamp(decision["at"]) - onset, 2)
        result["rollback_seconds_4xx"] = round(canary[-1].at - onset, 2)
        result["refused_requests_4xx"] = len(refused)
        result["failed_share_bound_4xx"] = round(len(refused) / (len(during) * WEIGHT / 100), 3)
        result["refused_outside_canary"] = sum(a.variant != "canary" for a in refused)
        result["failed_requests_4xx_run"] = len(load.failed())
        print(json.dumps({"refusing_canary": result, "reason": bad["reason"]}), flush=True)

        outcomes, durations = [], []
        with steady_load(plane.settings.gateway_url, "bench", rate=RATE) as load:
            for version in versions[2:]:
                healthy = publish_flaky_build(plane.container, version)
                done = run_rollout(plane, healthy)
                outcomes.append(done["phase"])
                durations.append(stamp(done["updated_at"]) - stamp(done["created_at"]))
                print(json.dumps({"healthy": done["phase"], "reason": done["reason"]}), flush=True)
        result["healthy_rollbacks"] = sum(phase != "succeeded" for phase in outcomes)
        result["healthy_runs"] = len(outcomes)
        result["healthy_failed_requests"] = len(load.failed())
        result["healthy_median_rollout_seconds"] = round(statistics.median(durations), 1)
        result["rate_rps"] = RATE
        result["interval_s"] = SETTINGS["interval_s"]
        result["tick_s"] = plane.settings.rollout_tick_seconds
        result["routes_refresh_s"] = plane.settings.routes_refresh_seconds
    print(json.dumps(result))


if __name__ == "__main__":
    main()
