#!/usr/bin/env bash
# Release a model through Shipway's CLI, from a CI job (GitHub Actions, GitLab CI, any).
#
# Two ways, chosen by SHIPWAY_SPEC:
#   - unset: register the ONNX model and its sample, build it (progress printed as the
#     build moves through its stages), then serve it: the first release deploys it, every
#     later one starts a rollout of the new build and follows it to its end;
#   - set (a path to a shipway.yaml): `shipway apply -f "$SHIPWAY_SPEC" --wait`, which
#     makes the platform match the spec and follows its builds and rollout.
# The job fails (non-zero exit) when an input is missing (2, naming it), the CLI refuses
# a request (its message; 1, or 2 for a bad command line), a build fails (its error and
# report), or the rollout does not succeed (rolled back or failed; 1).
#
# Inputs, all environment variables (secrets as masked CI variables):
#   SHIPWAY_API_URL       the Shipway API, e.g. https://shipway.example.com (required)
#   SHIPWAY_TOKEN         an API token of role deployer or admin (required)
#   SHIPWAY_SPEC          path of a shipway.yaml: apply it instead of the steps below
#   SHIPWAY_MODEL         registered model name (required without SHIPWAY_SPEC)
#   SHIPWAY_ONNX          path of the ONNX model (required without SHIPWAY_SPEC)
#   SHIPWAY_SAMPLE        path of the .npz reference sample (required without SHIPWAY_SPEC)
#   SHIPWAY_DEPLOYMENT    deployment to serve the build (required without SHIPWAY_SPEC)
#   SHIPWAY_CALIBRATION   .npz calibration dataset for INT8 builds (optional)
#   SHIPWAY_TAGS          KEY=VALUE tags of the version, space-separated (optional)
#   SHIPWAY_RECIPE        fp32 | fp16 | int8 | int8-dynamic (default fp32)
#   SHIPWAY_TARGET        onnxruntime-cpu | tensorrt (default onnxruntime-cpu)
#   SHIPWAY_BUILD_ARGS    more `shipway builds create` options, e.g. "--min-cosine 0.995"
#   SHIPWAY_DEPLOY_ARGS   more `shipway deploy` options for the first release, e.g.
#                         "--replicas 2 --max-replicas 6"
#   SHIPWAY_RUNTIME       local | kubernetes: what the Shipway API runs with (default
#                         local). On Kubernetes a later release deploys the new build
#                         into the ModelDeployment, whose spec.rollout says how the
#                         operator rolls it out, and follows that rollout to its end
#   SHIPWAY_ROLLOUT_STRATEGY  canary | experiment (default canary; local only)
#   SHIPWAY_ROLLOUT_ARGS  more `shipway rollouts start` options (local only), e.g.
#                         "--steps 10,50,100 --interval 60 --max-error-rate 0.01"
#   SHIPWAY_ROLLOUT_START_SECONDS  Kubernetes: how long the operator may take to record
#                         the rollout (default 300)
#   SHIPWAY_POLL_SECONDS  seconds between two looks at a build (default 5)
#   SHIPWAY_CLI           the command that runs the CLI (default: shipway)
#   SHIPWAY_PYTHON        a Python 3 to read the CLI's JSON (default: python3)
# The *_ARGS variables are split on whitespace (no quoting inside them).
set -euo pipefail

say() { printf 'release: %s\n' "$*" >&2; }
die() {
  say "error: $2"
  exit "$1"
}

require() {
  local name
  for name in "$@"; do
    if [[ -z "${!name:-}" ]]; then
      die 2 "$name is not set (see the inputs at the top of pipelines/ci/release.sh)"
    fi
  done
}

require_file() {
  local name=$1
  require "$name"
  [[ -f "${!name}" ]] || die 2 "$name: no file at ${!name}"
}

read -r -a CLI <<<"${SHIPWAY_CLI:-shipway}"
PYTHON=${SHIPWAY_PYTHON:-python3}

shipway() { command "${CLI[@]}" "$@"; } # the CLI, never this function again

# field FIELD [FIELD...]: read the JSON object on stdin and print those keys, one a line
field() {
  "$PYTHON" -c '
import json, sys
data = json.load(sys.stdin)
for key in sys.argv[1:]:
    value = data.get(key)
    print("" if value is None else value)
' "$@"
}

require SHIPWAY_API_URL SHIPWAY_TOKEN
export SHIPWAY_API_URL SHIPWAY_TOKEN

if [[ -n "${SHIPWAY_SPEC:-}" ]]; then
  require_file SHIPWAY_SPEC
  say "applying $SHIPWAY_SPEC to $SHIPWAY_API_URL"
  shipway apply -f "$SHIPWAY_SPEC" --wait
  exit 0
fi

require SHIPWAY_MODEL SHIPWAY_DEPLOYMENT
require_file SHIPWAY_ONNX
require_file SHIPWAY_SAMPLE
[[ -z "${SHIPWAY_CALIBRATION:-}" ]] || require_file SHIPWAY_CALIBRATION
read -r -a tags <<<"${SHIPWAY_TAGS:-}"
read -r -a build_args <<<"${SHIPWAY_BUILD_ARGS:-}"
read -r -a deploy_args <<<"${SHIPWAY_DEPLOY_ARGS:-}"
read -r -a rollout_args <<<"${SHIPWAY_ROLLOUT_ARGS:-}"
recipe=${SHIPWAY_RECIPE:-fp32}
target=${SHIPWAY_TARGET:-onnxruntime-cpu}
poll=${SHIPWAY_POLL_SECONDS:-5}
start_seconds=${SHIPWAY_ROLLOUT_START_SECONDS:-300}
# numbers checked before use: the start seconds reach bash arithmetic, which would run
# a $(...) inside one; the poll is sleep's (fractions allowed, never 0)
[[ "$poll" =~ ^[0-9]{1,5}(\.[0-9]{1,3})?$ && ! "$poll" =~ ^0*(\.0*)?$ ]] ||
  die 2 "SHIPWAY_POLL_SECONDS must be seconds above 0 (e.g. 5 or 0.5), got '$poll'"
[[ "$start_seconds" =~ ^(0|[1-9][0-9]{0,5})$ ]] || # no leading 0: bash reads 010 as octal
  die 2 "SHIPWAY_ROLLOUT_START_SECONDS must be whole seconds, got '$start_seconds'"
runtime=${SHIPWAY_RUNTIME:-local}
case "$runtime" in
  local) ;;
  kubernetes)
    # the rollout's settings are the ModelDeployment's spec.rollout there
    [[ -z "${SHIPWAY_ROLLOUT_ARGS:-}" && -z "${SHIPWAY_ROLLOUT_STRATEGY:-}" ]] ||
      die 2 "SHIPWAY_ROLLOUT_ARGS/SHIPWAY_ROLLOUT_STRATEGY: on Kubernetes a rollout takes the ModelDeployment's spec.rollout (kubectl edit md $SHIPWAY_DEPLOYMENT)"
    ;;
  *) die 2 "SHIPWAY_RUNTIME must be local or kubernetes (what the Shipway API runs with), got '$runtime'" ;;
esac
errors=$(mktemp)
trap 'rm -f "$errors"' EXIT

# 1. register
register=(models register "$SHIPWAY_MODEL" --onnx "$SHIPWAY_ONNX" --sample "$SHIPWAY_SAMPLE")
[[ -z "${SHIPWAY_CALIBRATION:-}" ]] || register+=(--calibration "$SHIPWAY_CALIBRATION")
for tag in "${tags[@]}"; do register+=(--tag "$tag"); done
registered=$(shipway "${register[@]}" --json) # a refusal exits here with the CLI's code
version=$(field version <<<"$registered")
say "registered $SHIPWAY_MODEL version $version"

# 2. build, printing each stage as the build reaches it (a CI log is no terminal: a
# progress bar would show only its last state)
queued=$(
  shipway builds create "$SHIPWAY_MODEL" --version "$version" --recipe "$recipe" \
    --target "$target" "${build_args[@]}" --json
)
build_id=$(field id <<<"$queued")
say "build $build_id queued: $recipe for $target"
seen=""
while :; do
  shown=$(shipway builds show "$build_id" --json)
  mapfile -t build < <(field status stage progress <<<"$shown")
  status=${build[0]} stage=${build[1]} progress=${build[2]:-0}
  if [[ "$status $stage" != "$seen" ]]; then
    say "build $build_id: $status, stage ${stage:-none} ($(awk -v p="$progress" 'BEGIN { printf "%d%%", p * 100 }'))"
    seen="$status $stage"
  fi
  case "$status" in
    succeeded) break ;;
    failed)
      shipway builds show "$build_id" >&2 || true # the error and the report's headline
      die 1 "build $build_id failed"
      ;;
  esac
  sleep "$poll"
done

# 3. serve: the first release deploys; later ones roll out
overview=$(shipway status --json)
serving=$(
  "$PYTHON" -c '
import json, sys
name = sys.argv[1]
found = [d for d in json.load(sys.stdin)["deployments"] if d["name"] == name]
print(found[0]["build_id"] if found else "")
' "$SHIPWAY_DEPLOYMENT" <<<"$overview"
)
if [[ -z "$serving" ]]; then
  say "deployment $SHIPWAY_DEPLOYMENT does not exist: deploying build $build_id"
  shipway deploy "$SHIPWAY_DEPLOYMENT" --build "$build_id" "${deploy_args[@]}"
  exit 0
fi
say "rolling $SHIPWAY_DEPLOYMENT out from build $serving to $build_id"
if [[ "$runtime" == local ]]; then
  # --wait follows the rollout's timeline and exits 1 unless it succeeded (rolled back,
  # failed), which fails this job
  shipway rollouts start "$SHIPWAY_DEPLOYMENT" --build "$build_id" \
    --strategy "${SHIPWAY_ROLLOUT_STRATEGY:-canary}" "${rollout_args[@]}" --wait
  exit 0
fi

# Kubernetes: the new build in the ModelDeployment is the rollout (the operator runs it
# with the resource's spec.rollout); its record, status.rollout, is read until it ends.
# Its id is the candidate's build id; until the operator has written it, it is not there.
shipway deploy "$SHIPWAY_DEPLOYMENT" --build "$build_id" --no-wait >/dev/null
deadline=$((SECONDS + start_seconds))
seen="" found=""
while :; do
  if record=$(shipway rollouts status "$SHIPWAY_DEPLOYMENT" "$build_id" --json 2>"$errors"); then
    found=1
    mapfile -t rollout < <(field phase weight running reason <<<"$record")
    if [[ "${rollout[0]} ${rollout[1]}" != "$seen" ]]; then
      say "rollout of $build_id: ${rollout[0]} at ${rollout[1]} %${rollout[3]:+ (${rollout[3]})}"
      seen="${rollout[0]} ${rollout[1]}"
    fi
    if [[ "${rollout[2]}" == False ]]; then
      [[ "${rollout[0]}" == succeeded ]] && exit 0
      die 1 "the rollout of build $build_id ended ${rollout[0]}: ${rollout[3]}"
    fi
  elif [[ -n "$found" ]]; then # it was there: this error is the CLI's, not a late start
    cat "$errors" >&2
    die 1 "cannot read the rollout of build $build_id on $SHIPWAY_DEPLOYMENT"
  elif ((SECONDS > deadline)); then
    cat "$errors" >&2
    die 1 "no rollout of build $build_id on $SHIPWAY_DEPLOYMENT after ${start_seconds}s"
  fi
  sleep "$poll"
done
