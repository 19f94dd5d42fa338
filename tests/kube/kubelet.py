"""The one stand-in of the test cluster: a kubelet for the serving node's Triton pods.

The test cluster has no kubelet; kwok plays its nodes. On the serving node
(``tests.kube.cluster.SERVING_NODE_NAME``) kwok only hands each pod an IP, and
:class:`TritonKubelet` does the rest as the kubelet would, with real processes:

- it runs the pod's init containers' commands (``python -m shipway_operator.fetch ...``,
  in this interpreter), then a real ``tritonserver`` of the local distribution (``make
  triton``) with the pod's arguments, bound to the pod's IP on the container's ports;
  the pod's ``emptyDir`` volumes are directories of the pod's own (paths in arguments are
  mapped to them);
- it plays the container's probes (``startupProbe``, ``readinessProbe``, ``livenessProbe``,
  ``httpGet`` against the pod IP) and writes the pod's status from what they see: phase,
  the ``Initialized``/``ContainersReady``/``Ready`` conditions, the containers' states.
  A pod is Ready only once its Triton answers its readiness probe, and goes back to not
  ready when it stops answering; a failing init container or a Triton that exits is
  ``terminated`` (exit code, the end of its log as message, as with
  ``terminationMessagePolicy: FallbackToLogsOnError``) and restarted with the kubelet's
  back-off (10 s doubling to 5 min, ``CrashLoopBackOff`` while waiting);
- on a pod's deletion it runs the container's ``preStop`` sleep, then stops that Triton
  (SIGTERM, SIGKILL when the grace period ends)
  and then deletes the pod object, as the kubelet does (so kwok recycles the IP only once
  nothing listens on it); on exit it stops every process it started and waits for them.

What it does not do: no container image (the ``image`` field is ignored, the local
Triton runs instead), no cgroups or resource limits, no user or security context (the
processes run as this one), no other volume kinds than ``emptyDir`` (the service
account's ``projected`` token volume is not made), no ``exec`` or
``tcpSocket`` probes, no other containers than ``tritonserver`` and no other init
containers than ``python -m shipway_operator.fetch`` (those pods are marked
``StandInUnsupported``, and never run). Probes run every ``probe_scale`` times the
pod's ``periodSeconds`` (default 0.3: Triton's 5 s readiness period is 1.5 s, its 10 s
liveness period 3 s), so that tests wait less while the probes keep their order; a
timeout is at most that period; thresholds are the pod's.

Pod IPs must be local on this machine: the stand-in routes the serving range to ``lo``
(``ip route add local <range> dev lo table local``; root). The route stays when the
stand-in ends: another test session on the machine may be using it, and it is harmless
(a private range no test machine routes elsewhere, made local: packets to it stay on
this machine). ``ip route del local 10.245.0.0/16 dev lo table local`` removes it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx
import psutil
from kubernetes import client, watch
from kubernetes.client.rest import ApiException

from shipway.runtime.processes import spawn
from shipway.runtime.triton_distribution import TritonDistribution
from shipway.runtime.triton_process import TritonProcess
from shipway_operator.manifests import GRPC_PORT, HTTP_PORT, METRICS_PORT
from tests.kube.cluster import SERVING_LABEL, SERVING_NODE_NAME, SERVING_RANGE, SERVING_TAINT

log = logging.getLogger(__name__)

BACKOFF_START, BACKOFF_CAP = 10.0, 300.0  # the kubelet's restart back-off, seconds
MESSAGE_LIMIT = 2048  # characters of a log's end kept in a container's status message
FETCH_MODULE = ("-m", "shipway_operator.fetch")
ADDRESS_FLAGS = ("--http-address", "--grpc-address", "--metrics-address")
STRATEGIC = "application/strategic-merge-patch+json"
UNSUPPORTED = "StandInUnsupported"
POD_PORTS = (HTTP_PORT, GRPC_PORT, METRICS_PORT)  # Triton's, in the operator's pods
PROBES = ("startupProbe", "readinessProbe", "livenessProbe")
# emptyDir volumes are directories of the pod's; the API server adds a projected one for
# the service account's token, which the stand-in leaves out (nothing here reads it)
VOLUME_KINDS = ("emptyDir", "projected")


class KubeletError(RuntimeError):
    """The stand-in cannot run on this machine (the message says what to do)."""


# ---- the local route ---------------------------------------------------------------


def route_command(cidr: str) -> list[str]:
    return ["ip", "route", "add", "local", cidr, "dev", "lo", "table", "local"]


def ensure_local_route(cidr: str = SERVING_RANGE) -> bool:
    """Make every address of ``cidr`` local (bindable, reached through ``lo``); True when
    this call added the route, False when it was there. Raises :class:`KubeletError`
    naming the command when it fails (not root, no ``ip``)."""
    command = route_command(cidr)
    try:
        shown = subprocess.run(
            ["ip", "-json", "route", "show", "table", "local", cidr],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        )
        routes = json.loads(shown.stdout or "[]")
        if any(r.get("type") == "local" and r.get("dst") == cidr for r in routes):
            return False
        subprocess.run(command, capture_output=True, text=True, timeout=10, check=True)
    except (OSError, subprocess.SubprocessError, ValueError) as exc:
        detail = getattr(exc, "stderr", None) or exc
        raise KubeletError(
            f"the serving node's pod IPs ({cidr}) cannot be made local: `{' '.join(command)}` "
            f"failed ({str(detail).strip()}); it needs root (CAP_NET_ADMIN)"
        ) from None
    return True


def wildcard_listeners(ports: tuple[int, ...] = POD_PORTS) -> list[str]:
    """Sockets listening on every address (``0.0.0.0``, ``::``) on one of ``ports``,
    described: Linux refuses a pod IP's Triton that port while one does."""
    found = []
    for conn in psutil.net_connections("tcp"):
        if (
            conn.status == psutil.CONN_LISTEN
            and conn.laddr
            and conn.laddr.ip in ("0.0.0.0", "::")
            and conn.laddr.port in ports
        ):
            owner = "a process of another user or namespace"
            if conn.pid is not None:
                with contextlib.suppress(psutil.Error):
                    owner = f"pid {conn.pid}: " + " ".join(psutil.Process(conn.pid).cmdline())
            found.append(f"*:{conn.laddr.port} ({owner[:200]})")
    return found


# ---- reading the pod spec (pure) ---------------------------------------------------


def now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def map_path(value: str, mounts: dict[str, Path]) -> str:
    """``value`` with a leading mount path replaced by its directory here (the longest
    mount path that is the value or a parent of it)."""
    for mount in sorted(mounts, key=len, reverse=True):
        if value == mount or value.startswith(mount.rstrip("/") + "/"):
            return str(mounts[mount]) + value[len(mount.rstrip("/")) :]
    return value


def map_argument(argument: str, mounts: dict[str, Path]) -> str:
    """An argument with paths of mounted volumes mapped, in ``--flag=PATH`` or ``PATH``."""
    if argument.startswith("-") and "=" in argument:
        flag, value = argument.split("=", 1)
        return f"{flag}={map_path(value, mounts)}"
    return map_path(argument, mounts)


def container_mounts(
    pod: dict[str, Any], container: dict[str, Any], volumes: Path
) -> dict[str, Path]:
    """mountPath -> the directory standing for each ``emptyDir`` the container mounts
    (a ``projected`` one, the service account's token, is left out: no argument of the
    stand-in's containers names it)."""
    empty = {v["name"] for v in pod["spec"].get("volumes") or [] if "emptyDir" in v}
    return {
        mount["mountPath"]: volumes / mount["name"]
        for mount in container.get("volumeMounts") or []
        if mount["name"] in empty
    }


def container_env(container: dict[str, Any]) -> dict[str, str]:
    """The container's literal ``env`` values (``valueFrom`` is not read)."""
    return {
        e["name"]: e.get("value", "") for e in container.get("env") or [] if "valueFrom" not in e
    }


def unsupported(pod: dict[str, Any]) -> str | None:
    """Why the stand-in cannot run this pod, or None."""
    spec = pod["spec"]
    containers = spec.get("containers") or []
    if len(containers) != 1 or (containers[0].get("command") or [""])[0] != "tritonserver":
        return "the Triton kubelet stand-in runs one `tritonserver` container per pod"
    for init in spec.get("initContainers") or []:
        argv = [*(init.get("command") or []), *(init.get("args") or [])]
        if argv[:1] not in (["python"], ["python3"]) or tuple(argv[1:3]) != FETCH_MODULE:
            return (
                f"init container {init['name']}: the stand-in runs only "
                "`python -m shipway_operator.fetch` init containers"
            )
    for volume in spec.get("volumes") or []:
        if not any(kind in volume for kind in VOLUME_KINDS):
            return f"volume {volume['name']}: the stand-in supports emptyDir volumes only"
    for kind in PROBES:
        try:
            Probe.of(containers[0], kind)
        except ValueError as exc:
            return str(exc)
    return None


def serving_placement() -> dict[str, Any]:
    """``spec.triton`` keys that put a ModelDeployment's pods on the serving node (its
    label as node selector, its taint tolerated): merge them into ``spec.triton``."""
    key, value = SERVING_LABEL
    toleration = {"operator": "Equal", **SERVING_TAINT}
    return {"nodeSelector": {key: value}, "tolerations": [toleration]}


def init_command(container: dict[str, Any], mounts: dict[str, Path]) -> list[str]:
    """``python -m shipway_operator.fetch ...`` in this interpreter, paths mapped."""
    argv = [*(container.get("command") or []), *(container.get("args") or [])]
    return [sys.executable, *(map_argument(a, mounts) for a in argv[1:])]


def triton_arguments(
    container: dict[str, Any], mounts: dict[str, Path], ip: str, backends: Path
) -> list[str]:
    """The container's ``tritonserver`` arguments with paths mapped, bound to the pod IP
    (any address flag of the pod's replaced) and the local distribution's backends."""
    argv = [*(container.get("command") or [])[1:], *(container.get("args") or [])]
    kept = [map_argument(a, mounts) for a in argv if not a.startswith(ADDRESS_FLAGS)]
    if not any(a.startswith("--backend-directory") for a in kept):
        kept.append(f"--backend-directory={backends}")
    return [*kept, *(f"{flag}={ip}" for flag in ADDRESS_FLAGS), "--allow-gpu-metrics=false"]


@dataclass(frozen=True)
class Probe:
    """An ``httpGet`` probe of the container, its period capped for tests."""

    path: str
    port: int
    period: float
    timeout: float
    failure_threshold: int
    success_threshold: int

    @classmethod
    def of(cls, container: dict[str, Any], kind: str, scale: float = 1.0) -> Probe | None:
        """The container's ``kind`` probe (``readinessProbe``...), or None; its period
        times ``scale``, its timeout at most that period. Raises ``ValueError`` for one
        that is not ``httpGet`` or names an unknown port."""
        probe = container.get(kind)
        if not probe:
            return None
        get = probe.get("httpGet")
        if get is None:
            raise ValueError(f"{kind}: the stand-in plays httpGet probes only")
        port = get.get("port")
        if isinstance(port, str) and not port.isdigit():
            named = {p.get("name"): p["containerPort"] for p in container.get("ports") or []}
            if port not in named:
                raise ValueError(f"{kind}: no container port named {port!r}")
            port = named[port]
        period = float(probe.get("periodSeconds", 10)) * scale
        return cls(
            path=get.get("path", "/"),
            port=int(port),
            period=period,
            timeout=min(float(probe.get("timeoutSeconds", 1)), period),
            failure_threshold=int(probe.get("failureThreshold", 3)),
            success_threshold=int(probe.get("successThreshold", 1)),
        )

    def check(self, ip: str) -> bool:
        """The kubelet's verdict: an answer from 200 to 399 in time is a success."""
        try:
            url = f"http://{ip}:{self.port}{self.path}"
            status = httpx.get(url, timeout=self.timeout, trust_env=False).status_code
        except httpx.HTTPError:
            return False
        return 200 <= status < 400


class Probing:
    """A container's probes, each on its own thread from now until ``close()``: the
    startup probe until it succeeds (``started``; ``failed`` after its failure
    threshold), then readiness (``ready`` after ``success_threshold`` successes in a
    row, not after ``failure_threshold`` failures) and liveness (``failed`` after its
    threshold). Without a startup probe the container counts as started, without a
    readiness probe a started one as ready."""

    def __init__(
        self, ip: str, startup: Probe | None, readiness: Probe | None, liveness: Probe | None
    ) -> None:
        self.ip = ip
        self.started = threading.Event()
        self.failed = threading.Event()
        self.ready = False
        self._closed = threading.Event()
        self._threads = [
            threading.Thread(target=self._startup, args=(startup,), daemon=True),
            threading.Thread(target=self._readiness, args=(readiness,), daemon=True),
            threading.Thread(target=self._liveness, args=(liveness,), daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    def close(self) -> None:
        self._closed.set()
        for thread in self._threads:
            thread.join(30)

    def _every(self, probe: Probe) -> Iterator[bool]:
        """The probe's verdicts, one per period, until closed or failed."""
        while not (self._closed.is_set() or self.failed.is_set()):
            began = time.monotonic()
            yield probe.check(self.ip)
            self._closed.wait(max(0.0, probe.period - (time.monotonic() - began)))

    def _after_start(self) -> bool:
        while not self.started.wait(0.1):
            if self._closed.is_set() or self.failed.is_set():
                return False
        return True

    def _startup(self, probe: Probe | None) -> None:
        if probe is None:
            self.started.set()
            return
        for failures, ok in enumerate(self._every(probe)):
            if ok:
                self.started.set()
                return
            if failures + 1 >= probe.failure_threshold:
                self.failed.set()

    def _readiness(self, probe: Probe | None) -> None:
        if not self._after_start():
            return
        if probe is None:
            self.ready = True
            return
        successes = failures = 0
        for ok in self._every(probe):
            successes, failures = (successes + 1, 0) if ok else (0, failures + 1)
            if successes >= probe.success_threshold:
                self.ready = True
            elif failures >= probe.failure_threshold:
                self.ready = False

    def _liveness(self, probe: Probe | None) -> None:
        if probe is None or not self._after_start():
            return
        failures = 0
        for ok in self._every(probe):
            failures = 0 if ok else failures + 1
            if failures >= probe.failure_threshold:
                self.failed.set()


def log_end(path: Path, limit: int = MESSAGE_LIMIT) -> str:
    try:
        text = path.read_text(errors="replace").strip()
    except OSError:
        return ""
    return text[-limit:]


# ---- one pod -----------------------------------------------------------------------


class _Stop(Exception):
    """The pod is going (deleted, or the stand-in is stopping): unwind."""


class PodTriton(TritonProcess):
    """A ``tritonserver`` with the pod's (mapped) arguments instead of local mode's."""

    def __init__(
        self,
        dist: TritonDistribution,
        arguments: list[str],
        log_path: Path,
        ip: str,
        http_port: int,
        env: dict[str, str],
    ) -> None:
        super().__init__(dist, Path(), log_path, host=ip)
        self.arguments = arguments
        self.http_port = http_port
        self.extra_env = env

    def command(self) -> list[str]:
        return [str(self.dist.binary), *self.arguments]


class PodWorker(threading.Thread):
    """Runs one pod from its IP to its deletion, writing its status as it goes."""

    def __init__(self, kubelet: TritonKubelet, pod: dict[str, Any]) -> None:
        meta = pod["metadata"]
        super().__init__(name=f"kubelet-{meta['namespace']}/{meta['name']}", daemon=True)
        self.kubelet = kubelet
        self.namespace, self.pod_name, self.uid = meta["namespace"], meta["name"], meta["uid"]
        self.directory = kubelet.workdir / self.namespace / f"{self.pod_name}-{self.uid[:8]}"
        self._pod = pod
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self.removed = False  # the pod object is gone
        self.triton: PodTriton | None = None
        self._child: subprocess.Popen[bytes] | None = None  # a running init container
        self.phase = "Pending"
        self.initialized = False
        self.init_statuses: dict[str, dict[str, Any]] = {}
        self.statuses: dict[str, dict[str, Any]] = {}
        self.restarts: dict[str, int] = {}

    # -- events from the watch --

    def observe(self, pod: dict[str, Any]) -> None:
        with self._lock:
            self._pod = pod
        self._wake.set()

    def gone(self) -> None:
        self.removed = True
        self._wake.set()

    def wake(self) -> None:
        self._wake.set()

    @property
    def pod(self) -> dict[str, Any]:
        with self._lock:
            return self._pod

    @property
    def terminating(self) -> bool:
        return bool(self.pod["metadata"].get("deletionTimestamp"))

    def _check(self) -> None:
        if self.removed or self.terminating or self.kubelet.stopping.is_set():
            raise _Stop

    def _sleep(self, seconds: float) -> None:
        """Wait ``seconds`` unless the pod goes meanwhile (then raise ``_Stop``)."""
        deadline = time.monotonic() + seconds
        while True:
            self._check()
            left = deadline - time.monotonic()
            if left <= 0:
                return
            self._wake.wait(min(left, 0.25))
            self._wake.clear()

    # -- the pod's life --

    def run(self) -> None:
        try:
            self._live()
        except _Stop:
            pass
        except Exception:  # a bug here must not end silently: the pod says why
            log.exception("stand-in kubelet: pod %s/%s", self.namespace, self.pod_name)
            with contextlib.suppress(Exception):
                self._fail_all("StandInError", f"the stand-in failed; see {self.directory}")
        finally:
            self._stop_processes()
            if self.terminating and not self.removed:
                self._delete_pod()
            elif not self.removed and self.kubelet.stopping.is_set():
                with contextlib.suppress(Exception):
                    self._fail_all("StandInStopped", "the stand-in kubelet stopped")

    def _live(self) -> None:
        while not self.pod.get("status", {}).get("podIP"):
            self._sleep(0.25)
        ip = self.pod["status"]["podIP"]
        self.directory.mkdir(parents=True, exist_ok=True)
        spec = self.pod["spec"]
        for init in spec.get("initContainers") or []:
            self.init_statuses[init["name"]] = self._waiting(init, "PodInitializing")
        for container in spec["containers"]:
            reason = "PodInitializing" if spec.get("initContainers") else "ContainerCreating"
            self.statuses[container["name"]] = self._waiting(container, reason)
        why = unsupported(self.pod)
        if why is not None:
            for container in spec["containers"]:
                self.statuses[container["name"]] = self._waiting(container, UNSUPPORTED, why)
            self._write()
            while True:
                self._sleep(3600)
        self._write()
        for init in spec.get("initContainers") or []:
            self._run_init(init)
        self.initialized = True
        self.phase = "Running"
        self._run_triton(spec["containers"][0], ip)

    def _run_init(self, container: dict[str, Any]) -> None:
        """Run an init container until it exits 0, restarting it with back-off."""
        name = container["name"]
        mounts = container_mounts(self.pod, container, self.directory / "volumes")
        for path in mounts.values():
            path.mkdir(parents=True, exist_ok=True)
        command = init_command(container, mounts)
        env = {**os.environ, **container_env(container)}
        logfile = self.directory / f"{name}.log"
        while True:
            started = now()
            self.init_statuses[name] = self._running(container, started, self.init_statuses)
            self._write()
            with logfile.open("ab") as out:
                self._child = spawn(
                    command, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env
                )
            while self._child.poll() is None:
                self._sleep(0.25)
            code = self._child.returncode
            self._child = None
            ended = self._terminated(code, started, logfile)
            if code == 0:
                self.init_statuses[name] = {**self._base(container, ready=True), "state": ended}
                self._write()
                return
            self._crashed(container, self.init_statuses, ended)

    def _crashed(
        self,
        container: dict[str, Any],
        statuses: dict[str, dict[str, Any]],
        ended: dict[str, Any],
    ) -> None:
        """A container that exited: ``terminated`` at once, then ``CrashLoopBackOff``
        for the back-off, with the exit as ``lastState``; returns when it may restart."""
        name = container["name"]
        statuses[name] = {**self._base(container, ready=False), "state": ended}
        self._write()
        restarts = self.restarts.get(name, 0)
        self.restarts[name] = restarts + 1
        backoff = min(BACKOFF_START * 2**restarts, BACKOFF_CAP)
        message = f"back-off {backoff:.0f}s restarting failed container={name} pod={self.pod_name}"
        waiting = {"waiting": {"reason": "CrashLoopBackOff", "message": message}}
        statuses[name] = {
            **self._base(container, ready=False),
            "state": waiting,
            "lastState": ended,
        }
        self._write()
        self._sleep(backoff)

    def _run_triton(self, container: dict[str, Any], ip: str) -> None:
        """Run Triton and play its probes until the pod goes."""
        startup, readiness, liveness = (
            Probe.of(container, kind, self.kubelet.probe_scale) for kind in PROBES
        )
        mounts = container_mounts(self.pod, container, self.directory / "volumes")
        for path in mounts.values():
            path.mkdir(parents=True, exist_ok=True)
        ports = {p.get("name"): p["containerPort"] for p in container.get("ports") or []}
        arguments = triton_arguments(container, mounts, ip, self.kubelet.dist.backends)
        env = container_env(container)
        if "/tmp" in mounts:
            env["TMPDIR"] = str(mounts["/tmp"])
        logfile = self.directory / f"{container['name']}.log"
        while True:
            started = now()
            self.triton = PodTriton(
                self.kubelet.dist, arguments, logfile, ip, ports.get("http", 8000), env
            )
            self.triton.start(reuse_ports=True)
            self.statuses[container["name"]] = self._running(container, started, self.statuses)
            self._write()
            process = self.triton._proc  # stop() forgets it; its exit code is needed
            exited = self._probe(container, ip, startup, readiness, liveness)
            triton, self.triton = self.triton, None
            triton.stop(grace=5)
            code = process.returncode if process is not None else None
            ended = self._terminated(code if code is not None else 137, started, logfile)
            if not exited:
                ended["terminated"]["reason"] = "Error"
                ended["terminated"]["message"] = (
                    "liveness or startup probe failed; " + ended["terminated"].get("message", "")
                )[:MESSAGE_LIMIT]
            self._crashed(container, self.statuses, ended)

    def _probe(
        self,
        container: dict[str, Any],
        ip: str,
        startup: Probe | None,
        readiness: Probe | None,
        liveness: Probe | None,
    ) -> bool:
        """Probe until Triton exits (True) or a startup/liveness probe fails it (False);
        the container's ``started``/``ready`` and the pod's conditions follow. Each probe
        runs on its own thread, as the kubelet's probe workers do: a slow one does not
        delay another."""
        assert self.triton is not None
        probing = Probing(ip, startup, readiness, liveness)
        try:
            seen = (False, False)
            while True:
                self._sleep(0.1)
                if not self.triton.alive():
                    return True  # poll() reaped it: its exit code is known
                if probing.failed.is_set():
                    return False
                now_seen = (probing.started.is_set(), probing.ready)
                if now_seen != seen:
                    seen = now_seen
                    self.statuses[container["name"]].update(started=seen[0], ready=seen[1])
                    self._write()
        finally:
            probing.close()

    # -- status --

    def _base(self, container: dict[str, Any], *, ready: bool) -> dict[str, Any]:
        return {
            "name": container["name"],
            "image": container.get("image", ""),
            "imageID": "",
            "ready": ready,
            "restartCount": self.restarts.get(container["name"], 0),
        }

    def _waiting(
        self, container: dict[str, Any], reason: str, message: str | None = None
    ) -> dict[str, Any]:
        waiting: dict[str, Any] = {"reason": reason}
        if message:
            waiting["message"] = message
        return {
            **self._base(container, ready=False),
            "started": False,
            "state": {"waiting": waiting},
        }

    def _running(
        self, container: dict[str, Any], started: str, statuses: dict[str, dict[str, Any]]
    ) -> dict[str, Any]:
        """Just started, not ready; the previous exit stays as ``lastState``."""
        running: dict[str, Any] = {
            **self._base(container, ready=False),
            "started": False,
            "state": {"running": {"startedAt": started}},
        }
        if last := statuses.get(container["name"], {}).get("lastState"):
            running["lastState"] = last
        return running

    def _terminated(self, code: int, started: str, logfile: Path) -> dict[str, Any]:
        """A ``terminated`` state; killed by signal N reads as exit code 128 + N, as a
        container runtime reports it."""
        code = 128 - code if code < 0 else code
        ended: dict[str, Any] = {
            "exitCode": code,
            "reason": "Completed" if code == 0 else "Error",
            "startedAt": started,
            "finishedAt": now(),
        }
        if code != 0 and (message := log_end(logfile)):
            ended["message"] = message
        return {"terminated": ended}

    def _conditions(self) -> list[dict[str, Any]]:
        containers = list(self.statuses.values())
        ready = bool(containers) and all(c.get("ready") for c in containers)
        unready = [c["name"] for c in containers if not c.get("ready")]
        pending_init = [n for n, s in self.init_statuses.items() if not s.get("ready")]
        stamp = now()
        old = {c.get("type"): c for c in self.pod.get("status", {}).get("conditions") or []}

        def condition(kind: str, value: bool, reason: str, message: str) -> dict[str, Any]:
            text = "True" if value else "False"
            previous = old.get(kind) or {}
            since = previous.get("lastTransitionTime") if previous.get("status") == text else None
            made: dict[str, Any] = {"type": kind, "status": text}
            made["lastTransitionTime"] = since or stamp
            if not value:
                made.update(reason=reason, message=message)
            return made

        not_ready = f"containers with unready status: [{' '.join(unready)}]"
        return [
            condition("PodReadyToStartContainers", True, "", ""),
            condition(
                "Initialized",
                self.initialized,
                "ContainersNotInitialized",
                f"containers with incomplete status: [{' '.join(pending_init)}]",
            ),
            condition("ContainersReady", ready, "ContainersNotReady", not_ready),
            condition("Ready", ready, "ContainersNotReady", not_ready),
        ]

    def _write(self) -> None:
        """Patch the pod's status (conditions merge by type; the lists are whole)."""
        status: dict[str, Any] = {
            "phase": self.phase,
            "conditions": self._conditions(),
            "containerStatuses": list(self.statuses.values()),
        }
        if self.init_statuses:
            status["initContainerStatuses"] = list(self.init_statuses.values())
        try:
            self.kubelet.core.patch_namespaced_pod_status(
                self.pod_name, self.namespace, {"status": status}, _content_type=STRATEGIC
            )
        except ApiException as exc:
            if exc.status == 404:
                self.gone()
                raise _Stop from None
            raise

    def _fail_all(self, reason: str, message: str) -> None:
        for container in self.pod["spec"]["containers"]:
            self.statuses[container["name"]] = self._waiting(container, reason, message)
        self._write()

    # -- the end --

    def _grace_left(self) -> float:
        """Seconds left of the pod's grace period (``deletionTimestamp`` is its end)."""
        end = self.pod["metadata"].get("deletionTimestamp")
        if not end:
            return 5.0
        deadline = datetime.fromisoformat(str(end).replace("Z", "+00:00"))
        return max(0.0, (deadline - datetime.now(UTC)).total_seconds() - 1.0)

    def _stop_processes(self) -> None:
        """Stop the init container or Triton this pod runs, and wait for it."""
        if self._child is not None:
            self._child.terminate()
            try:
                self._child.wait(5)
            except subprocess.TimeoutExpired:
                self._child.kill()
                self._child.wait(5)
            self._child = None
        if self.triton is not None:
            if self.terminating and not self.removed:
                # the container's preStop hook first, as the kubelet runs it: Triton keeps
                # serving while routers take the (now terminating) endpoint out
                pause = min(self._pre_stop_sleep(), self._grace_left())
                if pause > 0:
                    self.kubelet.stopping.wait(pause)
            grace = 0.0 if self.removed else min(self._grace_left(), 10.0)
            self.triton.stop(grace=grace)
            self.triton = None

    def _pre_stop_sleep(self) -> float:
        """Seconds of the Triton container's ``lifecycle.preStop.sleep`` (0 without one)."""
        for container in self.pod["spec"]["containers"]:
            hook = ((container.get("lifecycle") or {}).get("preStop") or {}).get("sleep") or {}
            if hook.get("seconds"):
                return float(hook["seconds"])
        return 0.0

    def _delete_pod(self) -> None:
        """What the kubelet does once a terminating pod's containers stopped."""
        options = client.V1DeleteOptions(
            grace_period_seconds=0, preconditions=client.V1Preconditions(uid=self.uid)
        )
        try:
            self.kubelet.core.delete_namespaced_pod(self.pod_name, self.namespace, body=options)
        except ApiException as exc:
            if exc.status not in (404, 409):  # gone already, or another pod of that name
                log.warning(
                    "stand-in kubelet: delete pod %s/%s: %s", self.namespace, self.pod_name, exc
                )


# ---- the kubelet -------------------------------------------------------------------


class TritonKubelet:
    """The stand-in kubelet of ``node`` (``with`` runs it): a list+watch of the node's
    pods, a :class:`PodWorker` per pod; logs per pod under ``workdir/<namespace>/<pod>-<uid>``.

    ``__enter__`` makes the serving range local (:func:`ensure_local_route`), checks
    that no socket listens on every address on Triton's ports (:func:`wildcard_listeners`;
    both raise :class:`KubeletError`) and checks the Triton distribution
    (``shipway.errors.Unavailable`` with the install command); ``__exit__`` stops every
    process it started, waits for them and marks its pods' containers not ready."""

    def __init__(
        self,
        api: client.ApiClient,
        dist: TritonDistribution,
        workdir: Path,
        *,
        node: str = SERVING_NODE_NAME,
        serving_range: str = SERVING_RANGE,
        probe_scale: float = 0.3,
    ) -> None:
        self.core = client.CoreV1Api(api)
        self.dist = dist
        self.workdir = workdir
        self.node = node
        self.serving_range = serving_range
        self.probe_scale = probe_scale
        self.stopping = threading.Event()
        self.workers: dict[str, PodWorker] = {}
        self._lock = threading.Lock()
        self._watch: watch.Watch | None = None
        self._thread = threading.Thread(target=self._watch_pods, name="kubelet-watch", daemon=True)
        self.route_added = False

    def __enter__(self) -> TritonKubelet:
        self.dist.check()
        self.route_added = ensure_local_route(self.serving_range)
        if taken := wildcard_listeners():
            raise KubeletError(
                "the pods' Tritons bind ports "
                f"{', '.join(map(str, POD_PORTS))} of their IPs, which these sockets "
                f"listening on every address forbid: {'; '.join(taken)}"
            )
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._thread.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stopping.set()
        if self._watch is not None:
            self._watch.stop()
        self._thread.join(30)
        with self._lock:
            workers = list(self.workers.values())
        for worker in workers:
            worker.wake()
        for worker in workers:
            worker.join(60)
        alive = [w.name for w in workers if w.is_alive()]
        if alive or self._thread.is_alive():
            raise KubeletError(f"stand-in kubelet threads still running: {alive}")

    # -- what tests ask --

    def worker(self, namespace: str, name: str) -> PodWorker | None:
        with self._lock:
            found = [
                w for w in self.workers.values() if (w.namespace, w.pod_name) == (namespace, name)
            ]
        return found[-1] if found else None

    def logs(self, namespace: str, name: str) -> dict[str, str]:
        """The end of each container's log of the pod (for a failing test's message)."""
        worker = self.worker(namespace, name)
        if worker is None:
            return {}
        return {p.stem: log_end(p) for p in sorted(worker.directory.glob("*.log"))}

    def triton_pid(self, namespace: str, name: str) -> int | None:
        """The pid of the pod's running ``tritonserver`` (its process group leader)."""
        worker = self.worker(namespace, name)
        triton = worker.triton if worker is not None else None
        return triton.pid if triton is not None and triton.alive() else None

    # -- the watch --

    def _dispatch(self, kind: str, pod: dict[str, Any]) -> None:
        uid = pod["metadata"]["uid"]
        with self._lock:
            worker = self.workers.get(uid)
            if kind == "DELETED":
                if worker is not None:
                    worker.gone()
                return
            if worker is None:
                if self.stopping.is_set():
                    return
                worker = self.workers[uid] = PodWorker(self, pod)
                worker.start()
                return
        worker.observe(pod)

    def _relist(self) -> str:
        listing = self.core.list_pod_for_all_namespaces(field_selector=f"spec.nodeName={self.node}")
        pods = [self.core.api_client.sanitize_for_serialization(p) for p in listing.items]
        present = {p["metadata"]["uid"] for p in pods}
        with self._lock:
            vanished = [w for uid, w in self.workers.items() if uid not in present]
        for worker in vanished:
            worker.gone()
        for pod in pods:
            self._dispatch("ADDED", pod)
        return str(listing.metadata.resource_version)

    def _watch_pods(self) -> None:
        version: str | None = None
        while not self.stopping.is_set():
            try:
                if version is None:
                    version = self._relist()
                self._watch = watch.Watch()
                for event in self._stream(version):
                    if self.stopping.is_set():
                        break
                    raw = event["raw_object"]
                    if event["type"] == "ERROR":
                        version = None  # 410 Gone: the version expired; list again
                        break
                    version = raw["metadata"]["resourceVersion"]
                    self._dispatch(event["type"], raw)
            except ApiException as exc:
                if exc.status != 410:
                    log.warning("stand-in kubelet: watch: %s", exc)
                    self.stopping.wait(1)
                version = None
            except Exception as exc:  # a dropped connection: list again, go on
                if not self.stopping.is_set():
                    log.warning("stand-in kubelet: watch: %s", exc)
                    self.stopping.wait(1)
                version = None

    def _stream(self, version: str) -> Iterator[dict[str, Any]]:
        assert self._watch is not None
        return self._watch.stream(
            self.core.list_pod_for_all_namespaces,
            field_selector=f"spec.nodeName={self.node}",
            resource_version=version,
            timeout_seconds=5,  # ends by itself every 5 s: the stand-in can stop in time
        )
