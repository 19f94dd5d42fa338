"""HTTP client of the control-plane API, used by the CLI, the demo and the tests."""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx


class ApiError(Exception):
    """The API refused or could not be reached; the message is for the user."""

    def __init__(self, message: str, status: int | None = None, usage: bool = False) -> None:
        super().__init__(message)
        self.status = status
        self.usage = usage  # the command line itself is wrong (exit 2), not the request


TERMINAL_BUILD = {"succeeded", "failed"}


class ApiClient:
    def __init__(self, base_url: str, token: str, timeout: float = 60.0) -> None:
        self.base_url = base_url.rstrip("/")
        self._http = httpx.Client(
            base_url=f"{self.base_url}/api/v1",
            headers={"Authorization": f"Bearer {token}"},
            timeout=timeout,
            trust_env=False,
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> ApiClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = self._http.request(method, path, **kwargs)
        except ValueError as exc:  # a number that is nan or inf: JSON has none
            raise ApiError(
                f"every number must be finite (not nan or inf): {exc}", usage=True
            ) from None
        except httpx.TransportError as exc:
            raise ApiError(
                f"cannot reach the Shipway API at {self.base_url} ({exc.__class__.__name__}); "
                "is `shipway up` running?"
            ) from None
        if response.status_code >= 400:
            try:
                detail = response.json().get("detail", response.text)
            except ValueError:
                detail = response.text
            if isinstance(detail, list):  # FastAPI validation errors
                detail = "; ".join(
                    f"{'.'.join(map(str, d.get('loc', [])))}: {d.get('msg')}" for d in detail
                )
            raise ApiError(f"{response.status_code}: {detail}", response.status_code)
        return response.json() if response.content else None

    def register(
        self,
        name: str,
        onnx: Path,
        sample: Path,
        tags: dict[str, str] | None = None,
        calibration: Path | None = None,
    ) -> dict[str, Any]:
        with contextlib.ExitStack() as files:
            upload = {
                "onnx": (onnx.name, files.enter_context(onnx.open("rb"))),
                "sample": (sample.name, files.enter_context(sample.open("rb"))),
            }
            if calibration is not None:
                upload["calibration"] = (
                    calibration.name,
                    files.enter_context(calibration.open("rb")),
                )
            return self._call(
                "POST",
                f"/models/{name}/versions",
                files=upload,
                data={"tags": json.dumps(tags or {})},
            )

    def models(self, name: str | None = None) -> list[dict[str, Any]]:
        return self._call("GET", "/models", params={"name": name} if name else None)

    def create_build(
        self,
        model: str,
        version: int,
        recipe: str,
        target: str,
        options: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        body = {
            "model": model,
            "version": version,
            "recipe": recipe,
            "target": target,
            "options": options or {},
        }
        return self._call("POST", "/builds", json=body)

    def build(self, build_id: str) -> dict[str, Any]:
        return self._call("GET", f"/builds/{build_id}")

    def builds(self) -> list[dict[str, Any]]:
        return self._call("GET", "/builds")

    def model_deployment(self, build_id: str, params: dict[str, Any]) -> dict[str, Any]:
        return self._call("GET", f"/builds/{build_id}/model-deployment", params=params)

    def wait_build(
        self,
        build_id: str,
        timeout: float = 1800.0,
        on_progress: Callable[[dict[str, Any]], None] | None = None,
    ) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            build = self.build(build_id)
            if on_progress:
                on_progress(build)
            if build["status"] in TERMINAL_BUILD:
                return build
            if time.monotonic() > deadline:
                raise ApiError(f"build {build_id} still {build['status']} after {timeout:.0f}s")
            time.sleep(0.5)

    def deploy(
        self,
        name: str,
        build_id: str,
        replicas: int | None = None,
        max_replicas: int | None = None,
        target_inflight: float | None = None,
        scale_down_stabilization_window_seconds: float | None = None,
        allow_signature_change: bool = False,
    ) -> dict[str, Any]:
        body = {
            "build_id": build_id,
            "replicas": replicas,
            "max_replicas": max_replicas,
            "target_inflight": target_inflight,
            "scale_down_stabilization_window_seconds": scale_down_stabilization_window_seconds,
            "allow_signature_change": allow_signature_change,
        }
        return self._call("PUT", f"/deployments/{name}", json=body)

    def set_variant(self, name: str, variant: str, **body: Any) -> dict[str, Any]:
        return self._call("PUT", f"/deployments/{name}/variants/{variant}", json=body)

    def remove_variant(self, name: str, variant: str) -> dict[str, Any]:
        return self._call("DELETE", f"/deployments/{name}/variants/{variant}")

    def set_routing(self, name: str, **body: Any) -> dict[str, Any]:
        return self._call("PUT", f"/deployments/{name}/routing", json=body)

    def deployment(self, name: str) -> dict[str, Any]:
        return self._call("GET", f"/deployments/{name}")

    def set_drift_policy(self, name: str, body: dict[str, Any]) -> dict[str, Any]:
        return self._call("PUT", f"/deployments/{name}/drift-policy", json=body)

    def drift(self, name: str, min_rows: int = 100) -> dict[str, Any]:
        return self._call("GET", f"/deployments/{name}/drift", params={"min_rows": min_rows})

    def wait_deployment(self, name: str, build_id: str, timeout: float = 300.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            deployment = self.deployment(name)
            if (
                deployment["build_id"] == build_id
                and deployment["status"] == "ready"
                and all(
                    v["desired_replicas"]
                    <= sum(
                        r["state"] == "ready" and r["build_id"] == v["build_id"]
                        for r in deployment["replicas"]
                        if r["variant"] == v["name"]
                    )
                    for v in deployment["variants"]
                )
                # ... and replicas of a replaced build no longer take traffic.
                and not any(
                    r["state"] == "ready" and r["build_id"] != v["build_id"]
                    for v in deployment["variants"]
                    for r in deployment["replicas"]
                    if r["variant"] == v["name"]
                )
            ):
                return deployment
            if deployment["build_id"] == build_id and deployment["status"] == "failed":
                raise ApiError(f"deployment {name} failed: {deployment['message']}")
            if time.monotonic() > deadline:
                raise ApiError(f"deployment {name} not ready after {timeout:.0f}s")
            time.sleep(0.5)

    def start_rollout(self, name: str, body: dict[str, Any]) -> dict[str, Any]:
        return self._call("POST", f"/deployments/{name}/rollouts", json=body)

    def rollouts(self, name: str) -> list[dict[str, Any]]:
        return self._call("GET", f"/deployments/{name}/rollouts")

    def rollout(self, name: str, rollout_id: str) -> dict[str, Any]:
        return self._call("GET", f"/deployments/{name}/rollouts/{rollout_id}")

    def operate_rollout(self, name: str, rollout_id: str, operation: str) -> dict[str, Any]:
        return self._call("POST", f"/deployments/{name}/rollouts/{rollout_id}/{operation}")

    def apply(
        self,
        spec: str,
        files: dict[str, bytes],
        dry_run: bool,
        name: str = "shipway.yaml",
        retry_failed: bool = False,
    ) -> dict[str, Any]:
        """``POST /apply``: the spec's text (``name``: its file's name, for the errors)
        and each file it names, the part's filename being the path as the spec writes it."""
        parts = [("files", (path, data)) for path, data in files.items()]
        data = {
            "spec": spec,
            "spec_name": name,
            "dry_run": "true" if dry_run else "false",
            "retry_failed": "true" if retry_failed else "false",
        }
        return self._call("POST", "/apply", data=data, files=parts or None)

    def intent(self, intent_id: int) -> dict[str, Any]:
        return self._call("GET", f"/apply/intents/{intent_id}")

    def status(self) -> dict[str, Any]:
        return self._call("GET", "/status")
