#!/usr/bin/env bash
# Create a kind cluster with cert-manager and KServe at pinned versions.
#   KSERVE_MODE=Standard (default): Gateway API CRDs + Envoy Gateway + KServe Standard mode.
#   KSERVE_MODE=Knative:            Knative Serving + Kourier + KServe Knative mode.
# Needs docker, kind, kubectl and helm on PATH, and internet access (images are pulled).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
# shellcheck source=versions.env
. "$here/versions.env"

for tool in docker kind kubectl helm; do
  command -v "$tool" >/dev/null || { echo "kind-up: $tool is required on PATH" >&2; exit 2; }
done

wait_deployments() { kubectl wait deployment --all -n "$1" --for=condition=Available --timeout="${2:-300s}"; }

if kind get clusters | grep -qx "$KIND_CLUSTER"; then
  echo "kind cluster $KIND_CLUSTER exists; reusing it"
else
  kind create cluster --name "$KIND_CLUSTER" --image "$KIND_NODE_IMAGE" \
    --config "$here/kind-config.yaml" --wait 180s
fi
kubectl config use-context "kind-$KIND_CLUSTER"

echo "== cert-manager $CERT_MANAGER_VERSION"
kubectl apply -f "https://github.com/cert-manager/cert-manager/releases/download/$CERT_MANAGER_VERSION/cert-manager.yaml"
wait_deployments cert-manager

case "$KSERVE_MODE" in
  Standard)
    echo "== Gateway API $GATEWAY_API_VERSION + Envoy Gateway $ENVOY_GATEWAY_VERSION"
    kubectl apply -f "https://github.com/kubernetes-sigs/gateway-api/releases/download/$GATEWAY_API_VERSION/standard-install.yaml"
    helm upgrade --install eg oci://docker.io/envoyproxy/gateway-helm --version "$ENVOY_GATEWAY_VERSION" \
      -n envoy-gateway-system --create-namespace --skip-crds --wait --timeout 5m
    kubectl apply -f - <<'YAML'
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {name: envoy}
spec: {controllerName: gateway.envoyproxy.io/gatewayclass-controller}
YAML
    ;;
  Knative)
    echo "== Knative Serving $KNATIVE_SERVING_VERSION + Kourier $KOURIER_VERSION"
    base="https://github.com/knative/serving/releases/download/$KNATIVE_SERVING_VERSION"
    kubectl apply -f "$base/serving-crds.yaml"
    kubectl apply -f "$base/serving-core.yaml"
    kubectl apply -f "https://github.com/knative/net-kourier/releases/download/$KOURIER_VERSION/kourier.yaml"
    kubectl patch configmap/config-network -n knative-serving --type merge \
      -p '{"data":{"ingress-class":"kourier.ingress.networking.knative.dev"}}'
    kubectl patch configmap/config-domain -n knative-serving --type merge -p '{"data":{"example.com":""}}'
    wait_deployments knative-serving
    wait_deployments kourier-system
    ;;
  *) echo "kind-up: KSERVE_MODE must be Standard or Knative, not $KSERVE_MODE" >&2; exit 2 ;;
esac

echo "== KServe $KSERVE_VERSION ($KSERVE_MODE mode)"
helm upgrade --install kserve-crd oci://ghcr.io/kserve/charts/kserve-crd --version "$KSERVE_VERSION" \
  -n kserve --create-namespace --wait
kserve_args=(--set "kserve.controller.deploymentMode=$KSERVE_MODE")
if [ "$KSERVE_MODE" = Standard ]; then
  kserve_args+=(--set kserve.controller.gateway.ingressGateway.enableGatewayApi=true
                --set kserve.controller.gateway.ingressGateway.kserveGateway=kserve/kserve-ingress-gateway)
fi
helm upgrade --install kserve oci://ghcr.io/kserve/charts/kserve --version "$KSERVE_VERSION" \
  -n kserve "${kserve_args[@]}" --wait --timeout 10m
if [ "$KSERVE_MODE" = Standard ]; then
  kubectl apply -f - <<'YAML'
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: kserve-ingress-gateway, namespace: kserve}
spec:
  gatewayClassName: envoy
  listeners:
    - {name: http, protocol: HTTP, port: 80, allowedRoutes: {namespaces: {from: All}}}
YAML
fi
wait_deployments kserve
echo "kind cluster $KIND_CLUSTER ready: cert-manager $CERT_MANAGER_VERSION, KServe $KSERVE_VERSION ($KSERVE_MODE)"
