"""One settings object for every Shipway process, read from ``SHIPWAY_*`` variables.

Nothing is parsed at import time: each process builds a ``Settings`` in its
composition root (API app factory, Celery app factory, CLI callback) and passes it
down. Tests build their own instead of monkeypatching globals.
"""

from __future__ import annotations

import json
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, ValidationInfo, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from shipway.builds.triton_models.padding import check_buckets

DEV_TOKEN = "shipway-dev-token"
DEV_ARCHIVE_KEY = "shipway-dev-archive-key"
# a pod's own namespace, as its service account's token volume provides it
SERVICE_ACCOUNT_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")


class Role(StrEnum):
    """What a token may do: viewers read, deployers change, admins do everything."""

    VIEWER = "viewer"
    DEPLOYER = "deployer"
    ADMIN = "admin"


class Environment(StrEnum):
    DEVELOPMENT = "development"
    PRODUCTION = "production"


class Runtime(StrEnum):
    """Where deployments run: replicas this machine starts (``local``), or
    ModelDeployment resources the operator reconciles (``kubernetes``)."""

    LOCAL = "local"
    KUBERNETES = "kubernetes"


def _default_home() -> Path:
    return Path.home() / ".local" / "share" / "shipway"


def _default_triton_home() -> Path:
    return Path.home() / ".cache" / "shipway" / "triton"


class Settings(BaseSettings):
    """Shipway's configuration, field by field.

    Every field can be set as ``SHIPWAY_<FIELD>`` (upper case). Defaults are the
    embedded local mode: SQLite files and a SQLite-backed Celery broker under
    ``home``, so ``shipway up`` needs no server of any kind.
    """

    model_config = SettingsConfigDict(env_prefix="SHIPWAY_", extra="ignore")

    environment: Environment = Field(
        Environment.DEVELOPMENT,
        description="`production` refuses the built-in development token.",
    )
    runtime: Runtime = Field(
        Runtime.LOCAL,
        description="`local`: the runtime manager starts Triton replicas on this machine; "
        "`kubernetes`: deploy and status write and read ModelDeployment resources "
        "(`shipway.io/v1alpha1`) that the operator reconciles.",
    )
    kubernetes_namespace: str = Field(
        "default",
        pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$",
        max_length=63,
        description="Namespace of the ModelDeployment resources (Kubernetes mode).",
    )
    kubeconfig: Path | None = Field(
        None,
        description="Kubeconfig file of the API server (Kubernetes mode). Unset: the pod's "
        "service account inside a cluster, else `KUBECONFIG` or `~/.kube/config`.",
    )
    kubernetes_context: str | None = Field(
        None, description="Context of the kubeconfig to use. Default: its current context."
    )
    kubernetes_timeout: float = Field(
        10.0, gt=0, description="Seconds one request to the Kubernetes API server may take."
    )
    kubernetes_triton_image: str | None = Field(
        None,
        description="Triton image of new ModelDeployments. Default: the CRD's "
        "(`nvcr.io/nvidia/tritonserver:24.10-py3`).",
    )
    kubernetes_node_selector: Annotated[dict[str, str], NoDecode] = Field(
        default_factory=dict,
        description="Node selector of new ModelDeployments' Triton pods, as JSON or "
        "`key=value,key=value`.",
    )
    kubernetes_inflight_metric: str = Field(
        "nv_inference_pending_request_count",
        description="Per-pod metric the HorizontalPodAutoscaler keeps at `target_inflight` "
        "(served to the HPA by a custom metrics adapter, e.g. prometheus-adapter).",
    )
    public_api_url: str | None = Field(
        None,
        description="The API's URL as pods in the cluster reach it: Triton pods fetch build "
        "archives from `<url>/api/v1/builds/<id>/model-repository.tar.gz`. "
        "Default: `api_url`.",
    )
    archive_key: str = Field(
        DEV_ARCHIVE_KEY,
        min_length=16,
        description="Key that signs build archive URLs (HMAC-SHA256), so pods fetch an "
        "archive without a token and nobody fetches one without its URL. Refused at its "
        "default in production.",
    )
    home: Path = Field(
        default_factory=_default_home,
        description="Directory for local state: SQLite files, MLflow artifacts, Triton "
        "model repositories and process logs.",
    )
    database_url: str | None = Field(
        None, description="SQLAlchemy URL of the state store. Default: SQLite in `home`."
    )
    mlflow_tracking_uri: str | None = Field(
        None,
        description="MLflow tracking URI (an `http://` server or a database URI). "
        "Default: SQLite in `home`.",
    )
    mlflow_registry_uri: str | None = Field(
        None, description="MLflow model registry URI. Default: the tracking URI."
    )
    mlflow_artifact_root: str | None = Field(
        None,
        description="Artifact location for new experiments when MLflow is used "
        "without a server. Default: `home`/mlartifacts.",
    )
    broker_url: str | None = Field(
        None,
        description="Celery broker. Default: kombu's SQLAlchemy transport on SQLite in "
        "`home`; use `redis://...` in production.",
    )
    result_backend: str | None = Field(
        None, description="Celery result backend. Default: SQLite in `home`."
    )
    build_queue: str = Field("builds", description="Celery queue of engine builds.")
    hook_queue: str = Field(
        "hooks",
        min_length=1,
        description="Celery queue of webhook deliveries (the task "
        "`shipway.gitops.process_delivery`): applying a pushed spec needs a Kubernetes token, "
        "so it has its own queue, and a worker that builds (runs untrusted models) need not "
        "consume it (`shipway serve worker --consume builds`). `serve worker` consumes both "
        "by default, so one local worker still does everything. Must differ from "
        "`build_queue`.",
    )

    @field_validator("hook_queue")
    @classmethod
    def _hook_queue_is_its_own(cls, value: str, info: ValidationInfo) -> str:
        # equal names would hand deliveries to every build worker again, token or not
        if value == info.data.get("build_queue"):
            raise ValueError(f"must differ from SHIPWAY_BUILD_QUEUE (both {value!r})")
        return value

    triton_home: Path = Field(
        default_factory=_default_triton_home,
        description="Local Triton distribution: `dist/` holds the tritonserver binary and "
        "libraries from the nvidia-pytriton wheel, `pyenv/` the Python environment "
        "its Python backend runs in. `scripts/install-triton.sh` fills it.",
    )
    webhook_secret: str | None = Field(
        None,
        description="Shared secret that signs drift webhooks (HMAC-SHA256); a webhook "
        "policy is refused while it is unset.",
    )
    github_webhook_secret: SecretStr | None = Field(
        None,
        description="Secret of the GitHub webhook that calls `POST /api/v1/hooks/git`: "
        "each push is checked against its `X-Hub-Signature-256` (HMAC-SHA256 of the body). "
        "Unset: GitHub deliveries are answered 404.",
    )
    gitlab_webhook_token: SecretStr | None = Field(
        None,
        description="Secret token of the GitLab webhook that calls `POST /api/v1/hooks/git`, "
        "compared with its `X-Gitlab-Token`. Unset: GitLab deliveries are answered 404.",
    )
    mlflow_webhook_secret: SecretStr | None = Field(
        None,
        description="Secret of the MLflow webhook that calls `POST /api/v1/hooks/mlflow` "
        "(`X-MLflow-Signature`, HMAC-SHA256). Unset: MLflow deliveries are answered 404.",
    )
    gitops_repository_url: str | None = Field(
        None,
        description="The Git repository whose `shipway.yaml` a push applies (any URL or path "
        "`git fetch` takes). The commit is always fetched from here, never from a URL in "
        "the push. Unset: pushes are answered 404.",
    )
    gitops_branch: str = Field(
        "main",
        min_length=1,
        description="The branch whose pushes are applied; pushes to other branches and "
        "tags are acknowledged and ignored.",
    )
    gitops_spec_path: str = Field(
        "shipway.yaml",
        min_length=1,
        description="Path of the spec in the repository; the files it names are relative "
        "to its directory.",
    )
    gitops_git_timeout: float = Field(
        120.0, gt=0, description="Seconds one `git` command (a fetch, a read) may take."
    )
    drift_check_seconds: float = Field(
        60.0,
        ge=0,
        description="How often the API process checks every deployment for drift and "
        "applies its policy; 0 turns the periodic check off (checks on demand remain).",
    )
    gitops_intent_seconds: float = Field(
        2.0,
        ge=0,
        description="How often the API process carries out `shipway apply`'s waiting "
        "deploys and rollouts whose build has finished (no client needs to stay "
        "connected); 0 turns the API process's intent loop off.",
    )
    rollout_tick_seconds: float = Field(
        0.5,
        ge=0,
        description="The rollout controller's poll while it waits on the world (a "
        "candidate's replicas starting, a port that failed); otherwise it sleeps until a "
        "rollout's next analysis. 0 turns the API process's controller off.",
    )
    rollout_start_timeout: float = Field(
        300.0,
        gt=0,
        description="Seconds a rollout waits for its candidate's replicas to be ready "
        "before it fails without having taken any traffic.",
    )
    build_redelivery_seconds: int = Field(
        3600,
        ge=10,
        description="With Redis: a build whose worker died is re-delivered after this "
        "long. Keep it above `build_hard_time_limit`, or a build still running would be "
        "delivered to a second worker.",
    )
    build_soft_time_limit: float = Field(
        1800.0,
        gt=0,
        description="Seconds a build may run before it is asked to stop: the build's "
        "process raises where it is and the build fails, naming the limit and the stage. "
        "Enforced by the worker itself (each build runs in a child process; Celery's own "
        "limits do not apply to the solo pool).",
    )
    build_hard_time_limit: float = Field(
        2100.0,
        gt=0,
        description="Seconds after which a build's process is killed, whatever it is "
        "doing (e.g. blocked inside ONNX Runtime, where the soft limit cannot reach it); "
        "the build fails naming the limit and the stage, and the worker takes the next "
        "build. At least `build_soft_time_limit`.",
    )
    build_bench_seconds: float = Field(
        1.0, gt=0, description="Length of one benchmark round of an optimized build."
    )
    build_bench_rounds: int = Field(
        3, ge=1, description="Alternating benchmark rounds (candidate, FP32, stable) per build."
    )
    build_bench_batch: int = Field(8, ge=1, description="Rows per request in build benchmarks.")
    build_bench_threads: int = Field(
        0, ge=0, description="ONNX Runtime threads in build benchmarks; 0: all cores."
    )
    perf_regression_tolerance: float = Field(
        0.10,
        ge=0,
        description="A candidate slower than the stable build by more than this share is "
        "flagged as a performance regression in its report.",
    )
    engine_cache_dir: Path | None = Field(
        None, description="TensorRT engine and timing caches. Default: `home`/engine-cache."
    )
    triton_onnx_backend: Literal["python", "onnxruntime"] = Field(
        "python",
        description="Triton backend for onnxruntime-cpu builds: `python` (ONNX Runtime "
        "inside the local Triton's Python backend) or `onnxruntime` (the official image). "
        "openvino-cpu builds follow it: OpenVINO inside the Python backend, or the official "
        "image's `openvino` backend.",
    )
    serving_trim_padding: bool = Field(
        True,
        description="Python-backend builds of models with a mask input trim each batch to "
        "its longest real row and batch requests by length bucket; a version's tag "
        "`shipway.trim_padding=false` opts it out. False is a kill switch: no build trims, "
        "whatever its tags (builds made before keep their packaged config).",
    )
    serving_length_buckets: list[int] = Field(
        [16, 32, 64, 128],
        description="Length buckets (tokens, ascending) by which trimmed builds group "
        "requests into one run; JSON list, e.g. `[16,32,64,128]`.",
    )
    triton_start_timeout: float = Field(
        120.0, description="Seconds to wait for a tritonserver to report ready."
    )
    api_host: str = Field("127.0.0.1", description="Address the control-plane API binds.")
    api_port: int = Field(8700, description="Port of the control-plane API.")
    gateway_host: str = Field("127.0.0.1", description="Address the inference gateway binds.")
    gateway_port: int = Field(8800, description="Port of the inference gateway.")
    gateway_namespace: str | None = Field(
        None,
        pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$",
        max_length=63,
        description="Namespace whose ModelDeployments the gateway routes (Kubernetes mode). "
        "Default: `kubernetes_namespace` when set, else the pod's own namespace (its "
        "service account's), else `default`.",
    )
    gateway_timeout: float = Field(30.0, description="Per-request timeout to Triton, seconds.")
    routes_refresh_seconds: float = Field(
        1.0, description="How often the gateway re-reads the routing table."
    )
    health_check_seconds: float = Field(
        1.0, description="Period of the gateway's active health checks of each replica."
    )
    ejection_failures: int = Field(
        3, description="Consecutive 5xx answers or connection errors that eject a replica."
    )
    ejection_seconds: float = Field(
        2.0, description="First ejection period; it doubles on each repeat, up to 30 s."
    )
    sample_rate: float = Field(
        0.1, ge=0.0, le=1.0, description="Share of requests the gateway keeps for drift checks."
    )
    sample_buffer_bytes: int = Field(
        32 * 2**20,
        ge=0,
        description="Bytes of sampled bodies the gateway keeps per deployment variant, oldest "
        "out first: three quarters for requests (input drift), one quarter for request and "
        "response pairs (output drift); each entry also counts 256 bytes of bookkeeping. A "
        "body larger than its part is not kept. Per variant, so that a small canary keeps "
        "as long a window as stable; the gateway holds at most this times the number of "
        "variants. The default keeps ~9,700 MiniLM requests of 128 tokens (binary "
        "tensors) per variant; 0 keeps none.",
    )
    reconcile_seconds: float = Field(
        1.0, description="How often the runtime manager compares desired and actual replicas."
    )
    api_url: str | None = Field(
        None, description="Where the CLI finds the API. Default: http://api_host:api_port."
    )
    token: str = Field(DEV_TOKEN, description="Bearer token the CLI sends.")
    api_tokens: Annotated[dict[str, Role], NoDecode] = Field(
        default_factory=lambda: {DEV_TOKEN: Role.ADMIN},
        description='Tokens the API accepts, as JSON `{"token": "role"}` or '
        "`token=role,token=role`. Roles: viewer, deployer, admin.",
    )

    @field_validator("api_tokens", mode="before")
    @classmethod
    def _parse_tokens(cls, value: object) -> object:
        return _pairs(value, "SHIPWAY_API_TOKENS", "token=role,token=role")

    @field_validator("kubernetes_node_selector", mode="before")
    @classmethod
    def _parse_node_selector(cls, value: object) -> object:
        return _pairs(value, "SHIPWAY_KUBERNETES_NODE_SELECTOR", "key=value,key=value")

    @field_validator("serving_length_buckets")
    @classmethod
    def _buckets_ascending(cls, value: list[int]) -> list[int]:
        try:
            return list(check_buckets(value))
        except ValueError as exc:
            raise ValueError(f"SHIPWAY_SERVING_LENGTH_BUCKETS: {exc}") from None

    @model_validator(mode="after")
    def _time_limits_in_order(self) -> Settings:
        if self.build_hard_time_limit < self.build_soft_time_limit:
            raise ValueError(
                "SHIPWAY_BUILD_HARD_TIME_LIMIT must be at least SHIPWAY_BUILD_SOFT_TIME_LIMIT, "
                f"got {self.build_hard_time_limit} < {self.build_soft_time_limit}"
            )
        return self

    @model_validator(mode="after")
    def _refuse_dev_token_in_production(self) -> Settings:
        if self.environment is Environment.PRODUCTION and DEV_TOKEN in self.api_tokens:
            raise ValueError(
                "the built-in development token is refused in production: "
                "set SHIPWAY_API_TOKENS to your own tokens"
            )
        return self

    @model_validator(mode="after")
    def _refuse_dev_archive_key_in_production(self) -> Settings:
        if (
            self.environment is Environment.PRODUCTION
            and self.runtime is Runtime.KUBERNETES
            and self.archive_key == DEV_ARCHIVE_KEY
        ):
            raise ValueError(
                "the built-in archive key is refused in production: set SHIPWAY_ARCHIVE_KEY"
            )
        return self

    # Derived locations: one place that knows the local layout under `home`.

    @property
    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{self.home / 'shipway.db'}"

    @property
    def resolved_mlflow_tracking_uri(self) -> str:
        return self.mlflow_tracking_uri or f"sqlite:///{self.home / 'mlflow.db'}"

    @property
    def resolved_mlflow_registry_uri(self) -> str:
        return self.mlflow_registry_uri or self.resolved_mlflow_tracking_uri

    @property
    def resolved_artifact_root(self) -> str | None:
        """None when a tracking server is used: the server then chooses the store."""
        if self.mlflow_artifact_root:
            return self.mlflow_artifact_root
        if self.resolved_mlflow_tracking_uri.startswith(("http://", "https://")):
            return None
        return (self.home / "mlartifacts").as_uri()

    @property
    def resolved_broker_url(self) -> str:
        return self.broker_url or f"sqla+sqlite:///{self.home / 'broker.db'}"

    @property
    def resolved_result_backend(self) -> str:
        return self.result_backend or f"db+sqlite:///{self.home / 'results.db'}"

    @property
    def resolved_api_url(self) -> str:
        return self.api_url or f"http://{self.api_host}:{self.api_port}"

    @property
    def resolved_public_api_url(self) -> str:
        return (self.public_api_url or self.resolved_api_url).rstrip("/")

    @property
    def gateway_url(self) -> str:
        return f"http://{self.gateway_host}:{self.gateway_port}"

    @property
    def resolved_gateway_namespace(self) -> str:
        """The gateway's namespace: set, else ``kubernetes_namespace`` if set, else the
        namespace of the pod it runs in, else ``default``."""
        if self.gateway_namespace:
            return self.gateway_namespace
        if "kubernetes_namespace" in self.model_fields_set:
            return self.kubernetes_namespace
        try:
            own = SERVICE_ACCOUNT_NAMESPACE.read_text().strip()
        except OSError:
            own = ""
        return own or self.kubernetes_namespace

    @property
    def resolved_engine_cache_dir(self) -> Path:
        return self.engine_cache_dir or self.home / "engine-cache"

    @property
    def gitops_cache_dir(self) -> Path:
        """Bare mirrors of ``gitops_repository_url`` (one per URL) that pushed commits are
        fetched into."""
        return self.home / "gitops"

    @property
    def runtime_dir(self) -> Path:
        """Model repositories and logs of the local tritonserver replicas."""
        return self.home / "runtime"

    def ensure_home(self) -> None:
        self.home.mkdir(parents=True, exist_ok=True)


def _pairs(value: object, variable: str, form: str) -> object:
    """A mapping from JSON or ``a=b,c=d`` (an environment variable's forms)."""
    if not isinstance(value, str):
        return value
    text = value.strip()
    if text.startswith("{"):
        return json.loads(text)
    pairs = [item.split("=", 1) for item in text.split(",") if item.strip()]
    if any(len(pair) != 2 for pair in pairs):
        raise ValueError(f"{variable} must be JSON or {form}")
    return {key.strip(): item.strip() for key, item in pairs}
