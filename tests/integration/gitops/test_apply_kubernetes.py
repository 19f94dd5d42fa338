"""``apply`` with ``SHIPWAY_RUNTIME=kubernetes`` on the real test cluster: the deploy
that waits for its build becomes a ModelDeployment once the build succeeded; a second
apply changes nothing (read back from the resource); a new model file's build becomes
the resource's ``spec.build`` (the operator's rollout), never a local rollout (which
Kubernetes mode refuses). The build runs through the real pipeline in this process, as
a worker runs it; the intent pass is the one the API process's loop makes.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from shipway.builds.pipeline import BuildPipeline
from shipway.container import Container
from shipway.gitops.plan import Kind
from shipway.services import gitops
from shipway.settings import Settings
from tests.integration.gitops.test_apply import spec_text, two_inputs
from tests.kube.cluster import TestCluster
from tests.support.services import free_port

pytestmark = pytest.mark.integration

GROUP, VERSION, PLURAL = "shipway.io", "v1alpha1", "modeldeployments"


@pytest.fixture
def container(
    tmp_path: Path, postgres_url: str, kube_cluster: TestCluster, kube_namespace: str
) -> Iterator[Container]:
    port = free_port()
    settings = Settings(
        home=tmp_path / "home",
        database_url=postgres_url,
        runtime="kubernetes",
        kubeconfig=kube_cluster.kubeconfig,
        kubernetes_namespace=kube_namespace,
        api_port=port,
        public_api_url=f"http://127.0.0.1:{port}",
        archive_key="gitops-test-archive-key",
        build_bench_seconds=0.2,
        build_bench_rounds=1,
        _env_file=None,
    )
    container = Container(settings)
    container.registry.initialize()
    yield container
    container.close()


def source(files: dict[str, bytes], text: str) -> gitops.SpecSource:
    return gitops.SpecSource(text, lambda path: files[path], "test")


def build_all(container: Container, plan: gitops.Plan) -> None:
    pipeline = BuildPipeline(container.db, container.registry, container.settings)
    for action in plan.actions:
        if action.kind is Kind.CREATE_BUILD:
            assert action.build_id is not None
            pipeline.run(action.build_id)


def resource(kube_api: client.ApiClient, namespace: str, name: str) -> dict[str, Any]:
    return client.CustomObjectsApi(kube_api).get_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, name
    )


def test_apply_deploys_model_deployments_in_kubernetes_mode(
    container: Container, kube_api: client.ApiClient, kube_namespace: str
) -> None:
    deployment = (
        "deployment:\n  name: kube-twin\n  build: fp32\n  replicas: 2\n"
        "  rollout: {strategy: canary, settings: {stepWeights: [50, 100]}}\n"
    )
    text = spec_text("kube-twin", "  - {name: fp32}\n", deployment)
    onnx_bytes, sample = two_inputs(2.0)
    files = {"model/model.onnx": onnx_bytes, "model/sample.npz": sample}

    plan = gitops.apply(container, source(files, text), dry_run=False, actor="test")
    deploy = plan.actions[-1]
    assert deploy.kind is Kind.DEPLOY and deploy.after_build
    build_all(container, plan)
    assert gitops.process_intents(container) == 1  # the API process's loop, one pass
    body = resource(kube_api, kube_namespace, "kube-twin")
    assert body["spec"]["build"]["id"] == deploy.build_id
    assert body["spec"]["replicas"] == 2
    assert gitops.get_intent(container, deploy.intent_id or 0).status == "done"

    again = gitops.apply(container, source(files, text), dry_run=False, actor="test")
    assert not again.changed, again.to_dict()

    files["model/model.onnx"] = two_inputs(3.0)[0]
    plan = gitops.apply(container, source(files, text), dry_run=False, actor="test")
    replace_build = plan.actions[-1]
    assert replace_build.kind is Kind.DEPLOY and replace_build.after_build  # not a rollout
    assert "the operator rolls it out" in replace_build.detail
    build_all(container, plan)
    gitops.process_intents(container)
    body = resource(kube_api, kube_namespace, "kube-twin")
    assert body["spec"]["build"]["id"] == replace_build.build_id
    assert gitops.get_intent(container, replace_build.intent_id or 0).status == "done"
