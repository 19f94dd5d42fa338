#!/usr/bin/env bash
# Install the local Triton distribution that Shipway's local runtime starts:
#   $TRITON_HOME/dist   tritonserver + libraries + Python backend, from the nvidia-pytriton wheel
#   $TRITON_HOME/pyenv  the Python environment the Python backend's stub runs in (numpy<2,
#                       onnxruntime, openvino for openvino-cpu builds)
# The wheel pins numpy<2, so it is installed apart from Shipway's own environment.
# Idempotent: a complete install is left as it is.
set -euo pipefail

TRITON_HOME="${SHIPWAY_TRITON_HOME:-$HOME/.cache/shipway/triton}"
PYTRITON_VERSION="${PYTRITON_VERSION:-0.7.0}"
PYTHON="${PYTHON:-python3}"
OPENVINO_SPEC="${OPENVINO_SPEC:-openvino>=2026.0,<2027}"  # as pyproject.toml's openvino extra
stamp="$TRITON_HOME/.installed-$PYTRITON_VERSION"

# openvino-cpu builds run OpenVINO inside the stub. A pyenv installed before that (CI
# caches $TRITON_HOME outside the clone) gets it added; one that has it is left alone.
ensure_openvino() {
  if ! "$TRITON_HOME/pyenv/bin/python" -c "import openvino" >/dev/null 2>&1; then
    echo "adding $OPENVINO_SPEC to the Triton Python environment"
    "$TRITON_HOME/pyenv/bin/pip" install --quiet --disable-pip-version-check "numpy<2" "$OPENVINO_SPEC"
  fi
}

if [ -f "$stamp" ]; then
  ensure_openvino
  echo "local Triton $PYTRITON_VERSION already installed in $TRITON_HOME"
  exit 0
fi

pyver=$("$PYTHON" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')
echo "installing local Triton (nvidia-pytriton $PYTRITON_VERSION, Python $pyver stub) into $TRITON_HOME"
rm -rf "$TRITON_HOME/dist" "$TRITON_HOME/pyenv"
mkdir -p "$TRITON_HOME"
"$PYTHON" -m pip install --quiet --disable-pip-version-check --no-deps \
  --target "$TRITON_HOME/dist" "nvidia-pytriton==$PYTRITON_VERSION"

server="$TRITON_HOME/dist/pytriton/tritonserver"
stub="$server/python_backend_stubs/$pyver/triton_python_backend_stub"
if [ ! -f "$stub" ]; then
  echo "error: nvidia-pytriton $PYTRITON_VERSION has no Python backend stub for Python $pyver" >&2
  exit 1
fi
# The backend looks for its stub next to itself; the stub's RPATH finds the
# wheel's libraries from there as well (same depth as python_backend_stubs/X.Y).
cp "$stub" "$server/backends/python/triton_python_backend_stub"

"$PYTHON" -m venv "$TRITON_HOME/pyenv"
"$TRITON_HOME/pyenv/bin/pip" install --quiet --disable-pip-version-check "numpy<2" "onnxruntime>=1.19,<2"
ensure_openvino

# The stub embeds the system's libpython of the same minor version.
if ! ldd "$stub" | grep -q "libpython$pyver.*=> /"; then
  echo "error: the Python backend stub needs libpython$pyver (Debian: apt-get install libpython$pyver)" >&2
  exit 1
fi
touch "$stamp"
echo "local Triton installed: $server/bin/tritonserver"
