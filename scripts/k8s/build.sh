#!/usr/bin/env bash
# Build the test cluster's binaries from the Go module proxy into a cache outside the
# clone, idempotently: what is already there at the pinned version is skipped (a warm run
# takes seconds; a cold one about 11 minutes on 2 cores and ~6 GB of Go caches, helm about
# two more).
#
#   ~/.cache/shipway/k8s/<kubernetes version>/
#     bin/     kube-apiserver kube-controller-manager kube-scheduler etcd kwok helm
#     stages/  kwok's stage documents (node/fast, node/heartbeat-with-lease, pod/fast)
#     crds/gateway-api/  the Gateway API standard-channel CRDs
#     crds/prometheus-operator/  the Prometheus Operator's ServiceMonitor CRD
#
# Versions are pinned here and in the wrapper modules (scripts/k8s/go.mod for Kubernetes,
# scripts/k8s/etcd/go.mod for etcd); tests/kube/cluster.py finds the cache the same way
# (SHIPWAY_K8S_CACHE overrides its root). Go builds run under `nice -n 19`: the machine's
# cores are shared.
set -euo pipefail

K8S_VERSION=v1.34.4
ETCD_VERSION=v3.6.16
KWOK_VERSION=v0.8.0
GATEWAY_API_VERSION=v1.6.3
# the chart tests' helm (tests/integration/helm), and the Prometheus Operator whose
# ServiceMonitor CRD the chart's ServiceMonitor is checked against
HELM_VERSION=v3.22.0
PROMETHEUS_OPERATOR_VERSION=v0.85.0

here="$(cd "$(dirname "$0")" && pwd)"
root="${SHIPWAY_K8S_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/shipway/k8s}/$K8S_VERSION"
bin="$root/bin"
mkdir -p "$bin"

# one build at a time per cache (CI and a developer's run may share the machine)
exec 9>"$root/.lock"
flock 9

# Go is installed in /usr/local/go on the CI machine, not always on a non-login PATH
if ! command -v go >/dev/null && [ -x /usr/local/go/bin/go ]; then
  export PATH="/usr/local/go/bin:$PATH"
fi
need_go() { # without Go the Kubernetes tests skip, except under CI where that fails
  command -v go >/dev/null && return 0
  if [ "${CI:-}" = true ] || [ "${SHIPWAY_REQUIRE_SERVICES:-}" = 1 ]; then
    echo "k8s: Go >= 1.26 is needed to build the test cluster (https://go.dev/dl/)" >&2
    exit 1
  fi
  echo "k8s: Go not found: the Kubernetes tests will skip (install Go >= 1.26 to run them)" >&2
  exit 0
}

# Go's own module and build caches stay where Go keeps them (outside the clone); the
# toolchain is the machine's (no automatic download of another).
export GOTOOLCHAIN=local GOFLAGS="${GOFLAGS:-} -trimpath"
export CGO_ENABLED=0

log() { printf 'k8s: %s\n' "$*"; }

# done_at NAME VERSION: true when NAME was built or copied at VERSION already.
done_at() { [ -e "$root/.$1.version" ] && [ "$(cat "$root/.$1.version")" = "$2" ]; }
mark() { printf '%s\n' "$2" >"$root/.$1.version"; }

timed() { # timed NAME COMMAND...: run and report its seconds
  local name=$1 start=$SECONDS
  shift
  "$@"
  log "$name built in $((SECONDS - start))s"
}

module_dir() { # the unpacked module MODULE@VERSION in Go's module cache (Go checked first)
  go mod download -json "$1" | python3 -c 'import json, sys; print(json.load(sys.stdin)["Dir"])'
}

build_kube() { # the three control-plane commands, version-stamped like a release
  local name=$1 ldflags="" pkg
  need_go
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ldflags+=" -X $pkg.gitVersion=$K8S_VERSION -X $pkg.gitMajor=1"
    ldflags+=" -X $pkg.gitMinor=$(cut -d. -f2 <<<"$K8S_VERSION")"
    ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
  done
  (cd "$here" && nice -n 19 go build -ldflags "-s -w$ldflags" \
    -o "$bin/$name.tmp" "k8s.io/kubernetes/cmd/$name")
  mv "$bin/$name.tmp" "$bin/$name"
}

for name in kube-apiserver kube-controller-manager kube-scheduler; do
  if done_at "$name" "$K8S_VERSION" && [ -x "$bin/$name" ]; then continue; fi
  timed "$name $K8S_VERSION" build_kube "$name"
  mark "$name" "$K8S_VERSION"
done

build_etcd() {
  need_go
  (cd "$here/etcd" && nice -n 19 go build -ldflags "-s -w" -o "$bin/etcd.tmp" go.etcd.io/etcd/server/v3)
  mv "$bin/etcd.tmp" "$bin/etcd"
}
if ! { done_at etcd "$ETCD_VERSION" && [ -x "$bin/etcd" ]; }; then
  timed "etcd $ETCD_VERSION" build_etcd
  mark etcd "$ETCD_VERSION"
fi

build_kwok() { # on its own: kwok pins another client-go than the control plane
  local gobin
  need_go
  gobin="$(mktemp -d)"
  GOBIN="$gobin" nice -n 19 go install -ldflags "-s -w" "sigs.k8s.io/kwok/cmd/kwok@$KWOK_VERSION"
  mv "$gobin/kwok" "$bin/kwok"
  rmdir "$gobin"
}
if ! { done_at kwok "$KWOK_VERSION" && [ -x "$bin/kwok" ]; }; then
  timed "kwok $KWOK_VERSION" build_kwok
  mark kwok "$KWOK_VERSION"
fi

build_helm() { # from helm's own module (its go.mod and go.sum, no replaces), stamped as
  # its release Makefile does: version, and the Kubernetes version `helm lint`/`template`
  # assume for .Capabilities (from the client-go it pins: v0.37 -> 1.37)
  local dir client_go major minor ldflags
  need_go
  dir="$(module_dir "helm.sh/helm/v3@$HELM_VERSION")"
  client_go="$(cd "$dir" && go list -m -f '{{.Version}}' k8s.io/client-go)"
  major=$(($(cut -d. -f1 <<<"${client_go#v}") + 1))
  minor=$(cut -d. -f2 <<<"$client_go")
  ldflags="-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION"
  ldflags+=" -X helm.sh/helm/v3/internal/version.metadata= -X helm.sh/helm/v3/internal/version.gitTreeState=clean"
  for pkg in helm.sh/helm/v3/pkg/lint/rules helm.sh/helm/v3/pkg/chartutil; do
    ldflags+=" -X $pkg.k8sVersionMajor=$major -X $pkg.k8sVersionMinor=$minor"
  done
  (cd "$dir" && nice -n 19 go build -ldflags "$ldflags" -o "$bin/helm.tmp" ./cmd/helm)
  mv "$bin/helm.tmp" "$bin/helm"
}
if ! { done_at helm "$HELM_VERSION" && [ -x "$bin/helm" ]; }; then
  timed "helm $HELM_VERSION" build_helm
  mark helm "$HELM_VERSION"
fi

copy_tree() { # copy_tree SRC DEST: replace DEST by a writable copy of SRC's YAML documents
  local f
  rm -rf "$2.tmp" "$2"
  mkdir -p "$2.tmp"
  for f in "$1"/*.yaml; do
    [ "$(basename "$f")" = kustomization.yaml ] || cp "$f" "$2.tmp"/
  done
  chmod -R u+w "$2.tmp"
  mv "$2.tmp" "$2"
}

if ! done_at stages "$KWOK_VERSION"; then
  need_go
  src="$(module_dir "sigs.k8s.io/kwok@$KWOK_VERSION")/kustomize/stage"
  for stage in node/fast node/heartbeat-with-lease pod/fast; do
    copy_tree "$src/$stage" "$root/stages/$stage"
  done
  mark stages "$KWOK_VERSION"
  log "kwok stages $KWOK_VERSION copied"
fi

if ! done_at gateway-api "$GATEWAY_API_VERSION"; then
  need_go
  src="$(module_dir "sigs.k8s.io/gateway-api@$GATEWAY_API_VERSION")/config/crd/standard"
  copy_tree "$src" "$root/crds/gateway-api"
  mark gateway-api "$GATEWAY_API_VERSION"
  log "Gateway API $GATEWAY_API_VERSION CRDs copied"
fi

if ! done_at prometheus-operator "$PROMETHEUS_OPERATOR_VERSION"; then
  need_go
  src="$(module_dir "github.com/prometheus-operator/prometheus-operator@$PROMETHEUS_OPERATOR_VERSION")"
  dest="$root/crds/prometheus-operator"
  rm -rf "$dest.tmp" "$dest" && mkdir -p "$dest.tmp"
  cp "$src/example/prometheus-operator-crd/monitoring.coreos.com_servicemonitors.yaml" "$dest.tmp"/
  chmod -R u+w "$dest.tmp" && mv "$dest.tmp" "$dest"
  mark prometheus-operator "$PROMETHEUS_OPERATOR_VERSION"
  log "Prometheus Operator $PROMETHEUS_OPERATOR_VERSION ServiceMonitor CRD copied"
fi

log "ready in $root"
