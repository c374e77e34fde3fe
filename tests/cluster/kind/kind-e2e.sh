#!/usr/bin/env bash
# Build the three images with Docker, load them into the kind cluster made by kind-up.sh, and run
# the end-to-end suite against it (the KServe engine: InferenceServices reconciled by KServe's
# controller, canary traffic split and promotion/rollback by the rollout operator).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../../.." && pwd)"
. "$here/versions.env"
PYTHON=${PYTHON:-$repo/.venv/bin/python}
TAG=${DON_IMAGE_TAG:-$("$PYTHON" -c 'import tomllib;print(tomllib.load(open("pyproject.toml","rb"))["project"]["version"])')}

cd "$repo"
kubectl config use-context "kind-$KIND_CLUSTER"
for pair in training-job:training_job/Dockerfile model-server:model_server/Dockerfile operator:ops/Dockerfile; do
  name=${pair%%:*}; dockerfile=${pair#*:}
  [ -f "$dockerfile" ] || { echo "kind-e2e: $dockerfile is missing" >&2; exit 2; }
  docker build -f "$dockerfile" -t "don-predictor/$name:$TAG" .
  kind load docker-image --name "$KIND_CLUSTER" "don-predictor/$name:$TAG"
done

DON_E2E_TARGET=kind DON_KSERVE_MODE="$KSERVE_MODE" DON_IMAGE_TAG="$TAG" \
  "$PYTHON" -m pytest tests/e2e -m e2e -p no:cacheprovider -v "$@"
