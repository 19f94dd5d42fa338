"""Registration through the API for every kind of signature: 201 with the sample's
rows and a drift profile of what varies by row, or a 422 that says what is wrong and
leaves nothing behind (issue 12, item 1: ``y = x * scale`` with a rank-0 scale was a
500)."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from mlflow import MlflowClient
from onnx import helper
from sqlalchemy import func, select

from shipway.api.app import create_app
from shipway.container import Container
from shipway.drift import profile_io
from shipway.settings import Settings
from shipway.store.models import ModelVersion
from tests.support.signatures import CASES, F32, model, tensor

pytestmark = pytest.mark.integration

ADMIN = "admin-token"


@pytest.fixture(scope="module")
def container(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Container]:
    """One embedded store and MLflow for the module; every test registers its own name."""
    home = tmp_path_factory.mktemp("home")
    container = Container(Settings(home=home, api_tokens={ADMIN: "admin"}))
    yield container
    container.close()


@pytest.fixture(scope="module")
def api(container: Container) -> Iterator[TestClient]:
    with TestClient(create_app(container)) as client:
        client.headers["Authorization"] = f"Bearer {ADMIN}"
        yield client


def npz(arrays: dict[str, np.ndarray]) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def register(api: TestClient, name: str, onnx: bytes, sample: dict[str, np.ndarray]):  # type: ignore[no-untyped-def]
    return api.post(
        f"/api/v1/models/{name}/versions",
        files={"onnx": ("m.onnx", onnx), "sample": ("s.npz", npz(sample))},
    )


def nothing_registered(container: Container, name: str) -> bool:
    s = container.settings
    client = MlflowClient(s.resolved_mlflow_tracking_uri, s.resolved_mlflow_registry_uri)
    with container.db.session() as session:
        rows = session.scalar(
            select(func.count()).select_from(ModelVersion).where(ModelVersion.name == name)
        )
    return rows == 0 and not client.search_registered_models(filter_string=f"name = '{name}'")


# Rows of a 12-row sample, the batch axis, and the profiled numeric features: only
# inputs split into rows are profiled (a constant of every request has no spread).
EXPECTED = {
    "scalar-scale": ("12", "batch", {"x[0]", "x[1]", "x[2]", "x[3]"}),
    "vector": ("12", "batch", {"x"}),
    "fixed": ("1", None, set()),
    "shared-length": ("12", "batch", {f"x[{j}]" for j in range(5)}),
    "column-mean": ("1", None, set()),
    "bias": ("12", "batch", {"x[0]", "x[1]", "x[2]", "x[3]"}),
    "tokens": ("12", "batch", {"mask.sum"}),
    "mixed-ranks": ("12", "batch", {"x.mean", "x.std", "mask.sum"}),
    "scalar-output": ("1", None, set()),
    "scalar-only": ("1", None, set()),
}


@pytest.mark.parametrize("case", sorted(EXPECTED))
def test_every_kind_of_signature_registers(
    api: TestClient, container: Container, case: str, tmp_path: Path
) -> None:
    rows, batch, numeric = EXPECTED[case]
    made = CASES[case]()
    response = register(api, case, made.onnx, made.sample(12))
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["tags"]["shipway.sample_rows"] == rows
    assert body["signature"]["batch_dim"] == batch
    path = container.registry.download(
        body["mlflow_run_id"], "reference/profile.npz", tmp_path / "profile"
    )
    profile = profile_io.from_bytes(path.read_bytes())
    assert set(profile.numeric) == numeric
    assert profile.rows == (int(rows) if batch else 0)


@pytest.mark.parametrize(
    ("case", "change", "message"),
    [
        ("scalar-scale", {"scale": np.ones(1, np.float32)}, "'scale' has shape [1]"),
        ("bias", {"b": np.ones(3, np.float32)}, "'b' has size 3 on axis 0, the model expects 4"),
        ("tokens", {"mask": np.ones((12, 6), np.int64)}, "disagree on dimension 'seq'"),
        ("vector", {"x": np.ones(0, np.float32)}, "the sample has no rows"),
    ],
)
def test_a_sample_that_does_not_fit_is_422_and_registers_nothing(
    api: TestClient, container: Container, case: str, change: dict, message: str
) -> None:
    made = CASES[case]()
    name = f"bad-{case}"
    response = register(api, name, made.onnx, {**made.sample(12), **change})
    assert response.status_code == 422, response.text
    assert message in response.json()["detail"]
    assert nothing_registered(container, name)


def test_an_output_that_drops_its_declared_batch_axis_is_422(
    api: TestClient, container: Container
) -> None:
    onnx_bytes = model(
        [helper.make_node("ReduceMean", ["x"], ["y"], axes=[0], keepdims=0)],
        [tensor("x", F32, ["batch", 4])],
        [tensor("y", F32, ["batch", 4])],  # declared, but the rows are reduced away
    )
    sample = {"x": np.ones((40, 4), np.float32)}  # more rows than one run takes
    response = register(api, "liar", onnx_bytes, sample)
    assert response.status_code == 422, response.text
    detail = response.json()["detail"]
    assert "does not run on its reference sample" in detail
    assert "its first axis is not the batch axis the signature declares" in detail
    assert nothing_registered(container, "liar")


def test_output_kind_tags_are_checked_at_registration(
    api: TestClient, container: Container
) -> None:
    """``shipway.output.<name>=class-scores|embedding`` tags steer the accuracy gate and
    the shadow comparison: one naming no output, or no kind, is a 422 now, not a
    failed build later."""
    made = CASES["scalar-scale"]()
    for tags, message in (
        ({"shipway.output.nope": "class-scores"}, "names no output"),
        ({"shipway.output.y": "banana"}, "choose one of class-scores, embedding"),
    ):
        refused = api.post(
            "/api/v1/models/tagged/versions",
            files={"onnx": ("m.onnx", made.onnx), "sample": ("s.npz", npz(made.sample(8)))},
            data={"tags": json.dumps(tags)},
        )
        assert refused.status_code == 422 and message in refused.json()["detail"], refused.text
        assert nothing_registered(container, "tagged")
    accepted = api.post(
        "/api/v1/models/tagged/versions",
        files={"onnx": ("m.onnx", made.onnx), "sample": ("s.npz", npz(made.sample(8)))},
        data={"tags": json.dumps({"shipway.output.y": "embedding"})},
    )
    assert accepted.status_code == 201, accepted.text


def test_serving_tags_are_checked_at_registration(api: TestClient, container: Container) -> None:
    """``shipway.mask_input=<input>|none`` names the mask the gate, the shadow and the
    served model's trimming read; ``shipway.trim_padding=true|false`` opts out of
    trimming. A tag naming no input, or another value, is a 422 now."""
    made = CASES["tokens"]()  # inputs ids and mask [batch, seq]
    files = {"onnx": ("m.onnx", made.onnx), "sample": ("s.npz", npz(made.sample(8)))}
    for tags, message in (
        ({"shipway.mask_input": "attention_mask"}, "names no input of the model"),
        ({"shipway.trim_padding": "off"}, "must be true or false"),
    ):
        refused = api.post(
            "/api/v1/models/serving-tags/versions", files=files, data={"tags": json.dumps(tags)}
        )
        assert refused.status_code == 422 and message in refused.json()["detail"], refused.text
        assert nothing_registered(container, "serving-tags")
    accepted = api.post(
        "/api/v1/models/serving-tags/versions",
        files=files,
        data={"tags": json.dumps({"shipway.mask_input": "mask", "shipway.trim_padding": "false"})},
    )
    assert accepted.status_code == 201, accepted.text


def test_a_mask_tag_naming_no_integer_batch_by_seq_input_is_refused(
    api: TestClient, container: Container
) -> None:
    """A float or rank-0 input is no mask to trim by: a 422 that says why, nothing kept."""
    made = CASES["scalar-scale"]()  # x float32 [batch, 4], scale rank 0
    files = {"onnx": ("m.onnx", made.onnx), "sample": ("s.npz", npz(made.sample(4)))}
    for name, problem in (("x", "has dtype float32"), ("scale", "has shape []")):
        refused = api.post(
            "/api/v1/models/mask-tag/versions",
            files=files,
            data={"tags": json.dumps({"shipway.mask_input": name})},
        )
        assert refused.status_code == 422, refused.text
        detail = refused.json()["detail"]
        assert f"input {name!r}, which {problem}; a mask input must be" in detail, detail
        assert nothing_registered(container, "mask-tag")
