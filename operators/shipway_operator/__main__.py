"""``python -m shipway_operator``: run the operator.

Serves the namespaces in ``SHIPWAY_OPERATOR_NAMESPACES`` (comma-separated), or the
whole cluster when unset; standalone (one replica, no kopf peering objects needed).
Exit code 2 with a one-line message on bad settings or when no Kubernetes connection is
configured (neither ``KUBECONFIG``/~/.kube/config nor an in-cluster service account).
"""

from __future__ import annotations

import sys

import kopf
from kubernetes.config import ConfigException
from pydantic import ValidationError

import shipway_operator.handlers  # noqa: F401  (registers the handlers)
from shipway_operator.kube import client_configuration
from shipway_operator.settings import OperatorSettings


def main() -> None:
    try:
        settings = OperatorSettings()
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        print(f"shipway-operator: bad settings (SHIPWAY_OPERATOR_*): {problems}", file=sys.stderr)
        raise SystemExit(2) from None
    try:  # fail at once, not kopf's retry of its startup activity every minute
        client_configuration()
    except ConfigException as exc:
        print(
            "shipway-operator: no Kubernetes connection: set KUBECONFIG to a kubeconfig "
            "file (or ~/.kube/config), or run in a pod for the in-cluster service account "
            f"({exc})".replace("\n", " "),
            file=sys.stderr,
        )
        raise SystemExit(2) from None
    kopf.configure(verbose=False)
    kopf.run(
        standalone=True,
        clusterwide=not settings.namespaces,
        namespaces=settings.namespaces,
        liveness_endpoint=settings.liveness_endpoint,
        memo=kopf.Memo(settings=settings),
    )


if __name__ == "__main__":
    main()
