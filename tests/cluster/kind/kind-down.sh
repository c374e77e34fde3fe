#!/usr/bin/env bash
# Delete the kind cluster (and with it everything kind-up and kind-e2e installed).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
. "$here/versions.env"
kind delete cluster --name "$KIND_CLUSTER"
