"""A real Kubernetes control plane for tests, on loopback, in a temporary directory.

etcd, kube-apiserver, kube-controller-manager and kube-scheduler are the upstream
binaries (built by ``scripts/k8s/build.sh``); only the kubelet is stood in for by kwok,
which plays two fake nodes. On ``kwok-node-0`` it moves the pods bound to it through the
stage documents of its own release (``node/fast``, ``node/heartbeat-with-lease``,
``pod/fast``): a scheduled pod becomes Running and Ready with an IP from the node's pod
CIDR, without any container running. ``kwok-serving-0`` (tainted
``shipway.io/serving=standin:NoSchedule``, so only pods that tolerate it land there) is
the serving node: kwok only gives its pods an IP (and deletes one whose grace period ran
out); everything else a kubelet does there is ``tests/kube/kubelet.py``'s (the
``TritonKubelet`` stand-in runs a real ``tritonserver`` per pod and plays its probes).
Deployments, ReplicaSets, EndpointSlices, garbage collection and the HPA controller are
the controller manager's own.

The API server serves TLS with a certificate of a CA made here (``ca.crt``), authenticates
a static token (an admin in ``system:masters``), authorizes with ``Node,RBAC`` and signs
service-account tokens with a key pair made here (issuer ``ISSUER``), so TokenRequest
works. Every process is a child started with the parent-death signal armed
(``shipway.runtime.processes.spawn``) and is stopped, and waited for, on ``stop()``.
"""

from __future__ import annotations

import contextlib
import datetime
import ipaddress
import os
import random
import re
import secrets
import signal
import ssl
import subprocess
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psutil
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from kubernetes import client
from kubernetes.client.rest import ApiException

from shipway.runtime.processes import spawn
from tests.support.processes import process_tree, wait_gone
from tests.support.services import free_port

REPO = Path(__file__).resolve().parents[2]
BUILD_SCRIPT = REPO / "scripts" / "k8s" / "build.sh"
BUILD_COMMAND = "bash scripts/k8s/build.sh"
CACHE_VARIABLE = "SHIPWAY_K8S_CACHE"  # the cache's root, as build.sh reads it
ISSUER = "https://kubernetes.default.svc.cluster.local"
SERVICE_CIDR = "10.96.0.0/16"
NODE_NAME = "kwok-node-0"
NODE_ANNOTATION = ("kwok.x-k8s.io/node", "fake")  # the nodes kwok plays, and only those
# Pod IPs kwok hands out. Not loopback: the API server refuses loopback addresses in
# EndpointSlices ("may not be in the loopback range"), so pods with 127.x IPs would never
# become endpoints. Nothing listens on them: pods that answer live on the serving node.
POD_CIDR = "10.244.0.0/16"
# The serving node: its pods get real Triton processes bound to their IPs, so its pod
# CIDR must be local on this machine (``tests/kube/kubelet.py`` routes SERVING_RANGE to
# ``lo``). Each cluster takes a /24 of it that no socket uses yet: two test sessions on
# one machine (CI jobs, developers) never hand out the same pod IP.
SERVING_NODE_NAME = "kwok-serving-0"
SERVING_RANGE = "10.245.0.0/16"
SERVING_LABEL = ("shipway.io/serving", "standin")
SERVING_TAINT = {"key": "shipway.io/serving", "value": "standin", "effect": "NoSchedule"}
COMPONENTS = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok")
STAGES = ("node/fast", "node/heartbeat-with-lease", "pod/fast")
LOG_TAIL_LINES = 40


class ClusterError(RuntimeError):
    """The test cluster could not be started, or a component failed; the message names
    the component and ends with the tail of its log."""


def pinned_version(name: str = "K8S_VERSION") -> str:
    """A version pinned in ``scripts/k8s/build.sh`` (the one place versions are set)."""
    match = re.search(rf"^{name}=(\S+)$", BUILD_SCRIPT.read_text(), re.MULTILINE)
    if match is None:
        raise ClusterError(f"{BUILD_SCRIPT} sets no {name}")
    return match.group(1)


@dataclass(frozen=True)
class Binaries:
    """The build script's output for one Kubernetes version:
    ``<root>/bin``, ``<root>/stages``, ``<root>/crds/gateway-api``."""

    root: Path

    @classmethod
    def default(cls) -> Binaries:
        """Where ``build.sh`` puts them: ``$SHIPWAY_K8S_CACHE`` (default
        ``~/.cache/shipway/k8s``) / the pinned Kubernetes version."""
        base = os.environ.get(CACHE_VARIABLE) or str(
            Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "shipway" / "k8s"
        )
        return cls(Path(base).expanduser() / pinned_version())

    def binary(self, name: str) -> Path:
        return self.root / "bin" / name

    def stage_files(self) -> list[Path]:
        """kwok's own stage documents (of its release), as files."""
        return sorted(p for stage in STAGES for p in (self.root / "stages" / stage).glob("*.yaml"))

    def gateway_api_crds(self) -> list[Path]:
        return sorted((self.root / "crds" / "gateway-api").glob("*.yaml"))

    def missing(self) -> list[str]:
        """What the build script has not produced (empty when all is there)."""
        gone = [name for name in COMPONENTS if not os.access(self.binary(name), os.X_OK)]
        gone += [
            f"stages/{s}" for s in STAGES if not any((self.root / "stages" / s).glob("*.yaml"))
        ]
        if not self.gateway_api_crds():
            gone.append("crds/gateway-api")
        return gone


def log_tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError as exc:
        return f"(no log: {exc})"
    return "\n".join(text.splitlines()[-lines:]) or "(empty log)"


# ---- certificates and keys ---------------------------------------------------------


def _pem_key(key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def write_pki(directory: Path, hosts: Iterable[str]) -> None:
    """A CA (``ca.crt``), the API server's serving certificate signed by it for ``hosts``
    (DNS names or IPs; ``apiserver.crt``/``.key``) and the service-account signing key
    pair (``sa.key``, ``sa.pub``; RSA 2048). Valid for a day: the cluster lives a session."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "shipway-test-ca")])
    ca_ski = x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key())
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(ca_ski, critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kube-apiserver")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    sa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    files = {
        "ca.crt": ca.public_bytes(serialization.Encoding.PEM),
        "apiserver.crt": cert.public_bytes(serialization.Encoding.PEM),
        "apiserver.key": _pem_key(key),
        "sa.key": _pem_key(sa_key),
        "sa.pub": sa_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ),
    }
    for name, data in files.items():
        (directory / name).write_bytes(data)
        (directory / name).chmod(0o600)


# ---- the cluster -------------------------------------------------------------------


@dataclass
class Component:
    """A started component: its process and the file its stdout and stderr go to."""

    name: str
    process: subprocess.Popen[bytes]
    log: Path


class TestCluster:
    """etcd + kube-apiserver + kube-controller-manager + kube-scheduler + kwok, started by
    ``start()`` (or ``with``), each on free loopback ports, state and logs in ``workdir``.

    The fake node offers 32 CPUs, 256 GiB, 110 pods and 4 ``nvidia.com/gpu`` (so GPU
    requests schedule; ``node_capacity`` changes it) and no taint. The serving node
    (``serving_node``, None for none) offers the same, is labelled and tainted
    ``shipway.io/serving=standin`` (``SERVING_LABEL``, ``SERVING_TAINT``) and hands out
    ``serving_pod_cidr`` (default: a /24 of ``SERVING_RANGE`` no socket here uses); its
    pods get an IP from kwok and nothing more until a ``TritonKubelet`` runs them.
    ``extra_args`` adds
    flags per component (e.g. ``{"kube-controller-manager":
    ["--horizontal-pod-autoscaler-sync-period=5s"]}``). ``kubeconfig`` is the admin's
    kubeconfig file (for a process, or ``KUBECONFIG``); ``api_client()`` a client.

    ``start()`` returns once the API server is ready (``/readyz``), the controller manager
    has made the ``default`` service account, the scheduler reports healthy and the fake
    nodes are Ready; it raises :class:`ClusterError` (with the failing component's log tail)
    when one exits or a deadline passes, after stopping what it started.
    """

    __test__ = False  # not a pytest test class, despite the name

    def __init__(
        self,
        workdir: Path,
        binaries: Binaries | None = None,
        *,
        pod_cidr: str = POD_CIDR,
        node_name: str = NODE_NAME,
        node_capacity: dict[str, str] | None = None,
        startup_timeout: float = 90.0,
        extra_args: dict[str, list[str]] | None = None,
        serving_node: str | None = SERVING_NODE_NAME,
        serving_pod_cidr: str | None = None,
    ) -> None:
        self.workdir = workdir
        self.binaries = binaries or Binaries.default()
        self.pod_cidr = pod_cidr
        self.node_name = node_name
        self.serving_node = serving_node
        self.serving_pod_cidr = serving_pod_cidr or (pick_serving_cidr() if serving_node else None)
        self.node_capacity = node_capacity or {
            "cpu": "32",
            "memory": "256Gi",
            "pods": "110",
            "nvidia.com/gpu": "4",
        }
        self.startup_timeout = startup_timeout
        self.extra_args = extra_args or {}  # per component name, appended to its flags
        self.token = secrets.token_hex(24)
        self.port = free_port()
        self.server = f"https://127.0.0.1:{self.port}"
        self.ca_file = workdir / "pki" / "ca.crt"
        self.kubeconfig = workdir / "kubeconfig"
        self.components: list[Component] = []
        self._clients: list[client.ApiClient] = []
        self._core_api: client.CoreV1Api | None = None

    # -- lifecycle --

    def __enter__(self) -> TestCluster:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        if missing := self.binaries.missing():
            raise ClusterError(
                f"test cluster binaries missing under {self.binaries.root}: "
                f"{', '.join(missing)}; build them with `{BUILD_COMMAND}`"
            )
        try:
            self._start()
        except BaseException:
            self.stop()
            raise

    def _start(self) -> None:
        deadline = time.monotonic() + self.startup_timeout
        pki = self.workdir / "pki"
        pki.mkdir(parents=True, exist_ok=True)
        service_ip = str(next(ipaddress.ip_network(SERVICE_CIDR).hosts()))
        write_pki(
            pki,
            [
                "127.0.0.1",
                "localhost",
                service_ip,
                "kubernetes",
                "kubernetes.default",
                "kubernetes.default.svc",
                "kubernetes.default.svc.cluster.local",
            ],
        )
        tokens = self.workdir / "tokens.csv"
        tokens.write_text(f'{self.token},shipway-admin,shipway-admin,"system:masters"\n')
        tokens.chmod(0o600)
        self._write_kubeconfig()

        etcd_port, peer_port = free_port(), free_port()
        etcd = self._spawn(
            "etcd",
            "--name=test",
            f"--data-dir={self.workdir / 'etcd'}",
            f"--listen-client-urls=http://127.0.0.1:{etcd_port}",
            f"--advertise-client-urls=http://127.0.0.1:{etcd_port}",
            f"--listen-peer-urls=http://127.0.0.1:{peer_port}",
            f"--initial-advertise-peer-urls=http://127.0.0.1:{peer_port}",
            f"--initial-cluster=test=http://127.0.0.1:{peer_port}",
            "--unsafe-no-fsync",
            "--log-level=warn",
        )
        self._wait(etcd, deadline, "etcd /health", lambda: _etcd_healthy(etcd_port))

        apiserver = self._spawn(
            "kube-apiserver",
            f"--etcd-servers=http://127.0.0.1:{etcd_port}",
            "--bind-address=127.0.0.1",
            "--advertise-address=127.0.0.1",
            f"--secure-port={self.port}",
            f"--cert-dir={pki}",
            f"--tls-cert-file={pki / 'apiserver.crt'}",
            f"--tls-private-key-file={pki / 'apiserver.key'}",
            f"--token-auth-file={tokens}",
            "--authorization-mode=Node,RBAC",
            f"--service-account-issuer={ISSUER}",
            f"--service-account-key-file={pki / 'sa.pub'}",
            f"--service-account-signing-key-file={pki / 'sa.key'}",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            # the `kubernetes` Service's endpoint would be 127.0.0.1, which EndpointSlice
            # validation refuses; nothing in the tests reaches the API server through it
            "--endpoint-reconciler-type=none",
            "--allow-privileged=true",
            "--profiling=false",
        )
        self._wait(apiserver, deadline, "kube-apiserver /readyz", self._api_ready)

        auth = [
            f"--kubeconfig={self.kubeconfig}",
            f"--authentication-kubeconfig={self.kubeconfig}",
            f"--authorization-kubeconfig={self.kubeconfig}",
            "--bind-address=127.0.0.1",
            "--leader-elect=false",
        ]
        kcm_port = free_port()
        kcm = self._spawn(
            "kube-controller-manager",
            *auth,
            f"--secure-port={kcm_port}",
            f"--cert-dir={self.workdir / 'kcm-certs'}",
            f"--service-account-private-key-file={pki / 'sa.key'}",
            f"--root-ca-file={self.ca_file}",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            "--controllers=*",
        )
        scheduler_port = free_port()
        scheduler = self._spawn(
            "kube-scheduler",
            *auth,
            f"--secure-port={scheduler_port}",
            f"--cert-dir={self.workdir / 'scheduler-certs'}",
        )
        self._create_node(self.node_name, self.pod_cidr, {"type": "kwok"}, [])
        if self.serving_node is not None and self.serving_pod_cidr is not None:
            labels = {"type": "kwok-serving", SERVING_LABEL[0]: SERVING_LABEL[1]}
            self._create_node(self.serving_node, self.serving_pod_cidr, labels, [SERVING_TAINT])
        stages = self.workdir / "kwok-stages.yaml"
        stages.write_text(
            yaml.safe_dump_all(
                kwok_stages(self.binaries.stage_files(), self.serving_node), sort_keys=False
            )
        )
        kwok_port = free_port()
        kwok = self._spawn(
            "kwok",
            f"--kubeconfig={self.kubeconfig}",
            f"--config={stages}",
            f"--manage-nodes-with-annotation-selector={'='.join(NODE_ANNOTATION)}",
            f"--cidr={self.pod_cidr}",
            "--node-ip=127.0.0.1",
            f"--node-name={self.node_name}",
            f"--server-address=127.0.0.1:{kwok_port}",
            "--node-lease-duration-seconds=40",  # kwok renews the node's lease
            env={**os.environ, "HOME": str(self.workdir)},  # no ~/.kwok config of the machine
        )
        self._wait(kcm, deadline, "kube-controller-manager /healthz", lambda: _healthy(kcm_port))
        self._wait(scheduler, deadline, "kube-scheduler /healthz", lambda: _healthy(scheduler_port))
        self._wait(
            kcm,
            deadline,
            "the `default` service account (made by kube-controller-manager)",
            lambda: self._exists(
                lambda api: api.read_namespaced_service_account("default", "default")
            ),
        )
        for node in (self.node_name, self.serving_node):
            if node is not None:
                self._wait(kwok, deadline, f"node {node} Ready (kwok)", self._node_ready(node))

    def stop(self) -> None:
        """Stop every component, newest first (SIGTERM, then SIGKILL after 15 s), and wait
        until none of their processes runs."""
        for api in self._clients:
            with contextlib.suppress(Exception):
                api.close()
        self._clients.clear()
        self._core_api = None
        trees = [ident for c in self.components for ident in process_tree(c.process.pid)]
        for component in reversed(self.components):
            if component.process.poll() is None:
                component.process.send_signal(signal.SIGTERM)
                try:
                    component.process.wait(15)
                except subprocess.TimeoutExpired:
                    component.process.kill()
                    component.process.wait(5)
        self.components.clear()
        wait_gone(trees, 15, "test cluster processes")

    # -- clients --

    def api_client(self) -> client.ApiClient:
        """A client of the API server as the admin (``system:masters``), verifying its
        certificate against ``ca_file``; closed by ``stop()`` if not before."""
        configuration = client.Configuration()
        configuration.host = self.server
        configuration.ssl_ca_cert = str(self.ca_file)
        configuration.verify_ssl = True
        configuration.api_key = {"authorization": self.token}
        configuration.api_key_prefix = {"authorization": "Bearer"}
        api = client.ApiClient(configuration)
        self._clients.append(api)
        return api

    def install_crds(self, paths: Iterable[Path], timeout: float = 30.0) -> list[str]:
        """Create (or replace) every CustomResourceDefinition in the YAML files ``paths``
        and wait until each is ``Established``; returns their names. Documents of other
        kinds (Gateway API ships a ValidatingAdmissionPolicy against downgrades) are
        skipped. Raises :class:`ClusterError` naming a CRD not established in time, or
        ``kubernetes.client.ApiException`` (with the server's message) for a refused one."""
        api = client.ApiextensionsV1Api(self.api_client())
        names: list[str] = []
        for path in paths:
            for doc in yaml.safe_load_all(Path(path).read_text()):
                if not doc or doc.get("kind") != "CustomResourceDefinition":
                    continue
                name = doc["metadata"]["name"]
                try:
                    api.create_custom_resource_definition(doc)
                except ApiException as exc:
                    if exc.status != 409:
                        raise
                    current = api.read_custom_resource_definition(name)
                    doc["metadata"]["resourceVersion"] = current.metadata.resource_version
                    api.replace_custom_resource_definition(name, doc)
                names.append(name)
        deadline = time.monotonic() + timeout
        for name in names:
            while True:
                crd = api.read_custom_resource_definition(name)
                conditions = {c.type: c for c in (crd.status.conditions or [])}
                established = conditions.get("Established")
                if established is not None and established.status == "True":
                    break
                if time.monotonic() > deadline:
                    raise ClusterError(
                        f"CRD {name} not Established after {timeout:.0f}s: "
                        + "; ".join(
                            f"{c.type}={c.status} ({c.message})" for c in conditions.values()
                        )
                    )
                time.sleep(0.1)
        return names

    # -- internals --

    def _spawn(self, name: str, *args: str, env: dict[str, str] | None = None) -> Component:
        log = self.workdir / f"{name}.log"
        with log.open("ab") as out:
            proc = spawn(
                [str(self.binaries.binary(name)), *args, *self.extra_args.get(name, [])],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
            )
        component = Component(name, proc, log)
        self.components.append(component)
        return component

    def _wait(
        self, component: Component, deadline: float, what: str, check: Callable[[], bool]
    ) -> None:
        """Poll ``check`` until it holds; fail early when any component has exited."""
        while True:
            for c in self.components:
                if (code := c.process.poll()) is not None:
                    raise ClusterError(
                        f"{c.name} exited with code {code} while waiting for {what}; "
                        f"the end of {c.log}:\n{log_tail(c.log)}"
                    )
            if check():
                return
            if time.monotonic() > deadline:
                raise ClusterError(
                    f"{what} not reached within {self.startup_timeout:.0f}s of start; "
                    f"the end of {component.log}:\n{log_tail(component.log)}"
                )
            time.sleep(0.1)

    def _ssl_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca_file))

    def _api_ready(self) -> bool:
        try:
            response = httpx.get(
                f"{self.server}/readyz",
                headers={"Authorization": f"Bearer {self.token}"},
                verify=self._ssl_context(),
                timeout=2,
            )
        except httpx.HTTPError:
            return False
        return response.status_code == 200

    def _core(self) -> client.CoreV1Api:
        if self._core_api is None:
            self._core_api = client.CoreV1Api(self.api_client())
        return self._core_api

    def _exists(self, read: Callable[[client.CoreV1Api], Any]) -> bool:
        try:
            read(self._core())
        except ApiException as exc:
            if exc.status == 404:
                return False
            raise
        return True

    def _create_node(
        self, name: str, pod_cidr: str, labels: dict[str, str], taints: list[dict[str, str]]
    ) -> None:
        """A fake node, registered as a kubelet would (capacity in its status), with its
        pod CIDR in the spec: kwok allocates pod IPs from the node's ``spec.podCIDR``."""
        key, value = NODE_ANNOTATION
        node = {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": name,
                "annotations": {key: value, "node.alpha.kubernetes.io/ttl": "0"},
                "labels": {
                    "kubernetes.io/hostname": name,
                    "kubernetes.io/os": "linux",
                    "kubernetes.io/arch": "amd64",
                    **labels,
                },
            },
            "spec": {"podCIDR": pod_cidr, "podCIDRs": [pod_cidr], "taints": taints},
            "status": {"capacity": self.node_capacity, "allocatable": self.node_capacity},
        }
        self._core().create_node(node)

    def _node_ready(self, name: str) -> Callable[[], bool]:
        def ready() -> bool:
            node = self._core().read_node(name)
            conditions = node.status.conditions or []
            return any(c.type == "Ready" and c.status == "True" for c in conditions)

        return ready

    def _write_kubeconfig(self) -> None:
        """The admin's kubeconfig, for the components and for any client that wants a file."""
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "test",
                    "cluster": {"server": self.server, "certificate-authority": str(self.ca_file)},
                }
            ],
            "users": [{"name": "admin", "user": {"token": self.token}}],
            "contexts": [{"name": "test", "context": {"cluster": "test", "user": "admin"}}],
            "current-context": "test",
        }
        self.kubeconfig.write_text(yaml.safe_dump(config))
        self.kubeconfig.chmod(0o600)


# ---- kwok's stages ---------------------------------------------------------------

# The serving node's pods: kwok plays the network plugin only (an IP from the node's pod
# CIDR, the node's address as host IP); phase, conditions and container states are the
# stand-in kubelet's (tests/kube/kubelet.py), which also deletes a terminating pod once
# its Triton stopped. Should no stand-in run, kwok deletes a terminating pod when its
# grace period ends, as the kubelet would have (not earlier: kwok would recycle the IP
# while a Triton still listens on it).
_SERVING_IP_TEMPLATE = """\
{{ $now := Now }}
{{ $hostIPs := NodeIPsWith .spec.nodeName }}
{{ with $hostIPs }}
hostIP: {{ index . 0 | Quote }}
hostIPs:
{{ range . }}
- ip: {{ . | Quote }}
{{ end }}
{{ end }}
{{ $podIPs := PodIPsWith .spec.nodeName ( or .spec.hostNetwork false ) ( or .metadata.uid "" ) \
( or .metadata.name "" ) ( or .metadata.namespace "" ) }}
{{ with $podIPs }}
podIP: {{ index . 0 | Quote }}
podIPs:
{{ range . }}
- ip: {{ . | Quote }}
{{ end }}
{{ end }}
startTime: {{ $now | Quote }}
"""


def _on_node(node: str, operator: str) -> dict[str, Any]:
    return {"key": ".spec.nodeName", "operator": operator, "values": [node]}


def serving_stages(node: str) -> list[dict[str, Any]]:
    """kwok's stages for the serving node's pods (see ``_SERVING_IP_TEMPLATE``)."""
    pod = {"apiGroup": "v1", "kind": "Pod"}
    return [
        {
            "apiVersion": "kwok.x-k8s.io/v1alpha1",
            "kind": "Stage",
            "metadata": {"name": "serving-pod-ip"},
            "spec": {
                "resourceRef": pod,
                "selector": {
                    "matchExpressions": [
                        _on_node(node, "In"),
                        {"key": ".metadata.deletionTimestamp", "operator": "DoesNotExist"},
                        {"key": ".status.podIP", "operator": "DoesNotExist"},
                    ]
                },
                "next": {"statusTemplate": _SERVING_IP_TEMPLATE},
            },
        },
        {
            "apiVersion": "kwok.x-k8s.io/v1alpha1",
            "kind": "Stage",
            "metadata": {"name": "serving-pod-grace-over"},
            "spec": {
                "resourceRef": pod,
                "selector": {
                    "matchExpressions": [
                        _on_node(node, "In"),
                        {"key": ".metadata.deletionTimestamp", "operator": "Exists"},
                    ]
                },
                # kwok reads a time as "that long from now": the end of the grace period
                "delay": {
                    "durationMilliseconds": 1000,
                    "durationFrom": {"expressionFrom": ".metadata.deletionTimestamp"},
                },
                "next": {"delete": True},
            },
        },
    ]


def kwok_stages(release: Iterable[Path], serving_node: str | None) -> list[dict[str, Any]]:
    """kwok's configuration: the stage documents of its release, each pod stage kept off
    the serving node (kwok picks at random among matching stages: they must not
    overlap), and the serving node's own stages. Without a serving node, the release's
    documents as they are."""
    documents: list[dict[str, Any]] = []
    for path in release:
        for doc in yaml.safe_load_all(path.read_text()):
            if not doc:
                continue
            if serving_node is not None and doc["spec"]["resourceRef"]["kind"] == "Pod":
                selector = doc["spec"].setdefault("selector", {})
                selector.setdefault("matchExpressions", []).append(_on_node(serving_node, "NotIn"))
            documents.append(doc)
    if serving_node is not None:
        documents += serving_stages(serving_node)
    return documents


def pick_serving_cidr(attempts: int = 64) -> str:
    """A /24 of ``SERVING_RANGE`` on whose addresses no TCP socket of this machine is
    bound (another test session's Tritons would be); random, so that two sessions
    starting together rarely pick the same. Raises ``ClusterError`` if none is found."""
    taken = {
        ipaddress.ip_address(c.laddr.ip)
        for c in psutil.net_connections("tcp4")
        if c.laddr and ipaddress.ip_address(c.laddr.ip) in ipaddress.ip_network(SERVING_RANGE)
    }
    subnets = list(ipaddress.ip_network(SERVING_RANGE).subnets(new_prefix=24))
    for subnet in random.sample(subnets, min(attempts, len(subnets))):
        if not any(ip in subnet for ip in taken):
            return str(subnet)
    raise ClusterError(f"no /24 of {SERVING_RANGE} is free of bound sockets")


def _etcd_healthy(port: int) -> bool:
    try:
        response = httpx.get(f"http://127.0.0.1:{port}/health", timeout=2)
    except httpx.HTTPError:
        return False
    return response.status_code == 200 and response.json().get("health") == "true"


def _healthy(port: int) -> bool:
    """A component's ``/healthz`` (always allowed without credentials); its serving
    certificate is self-signed by the component itself, hence no verification (loopback)."""
    try:
        response = httpx.get(f"https://127.0.0.1:{port}/healthz", verify=False, timeout=2)
    except httpx.HTTPError:
        return False
    return response.status_code == 200


def unique_name(prefix: str) -> str:
    """A DNS-1123 name unlikely to collide (a prefix and 8 hex digits)."""
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def wait_for(check: Callable[[], Any], timeout: float, what: str, interval: float = 0.2) -> Any:
    """Poll ``check`` until it returns something truthy (returned); on timeout raise
    ``AssertionError`` naming ``what`` and the last value seen."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"{what}: not within {timeout:.0f}s (last: {last!r})")
