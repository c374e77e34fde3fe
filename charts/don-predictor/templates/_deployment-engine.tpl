{{/* How the deployment engine splits traffic for one model: "route" (HTTPRoute weights) or "ratio". */}}
{{- define "don.splitMode" -}}
{{- if and .Values.serving.deployment.httpRoute.enabled (include "don.hasGatewayApi" .) (not .Values.operator.enabled) -}}route{{- else -}}ratio{{- end -}}
{{- end -}}

{{/* The tracks of one model: list of dicts {track, deployment, version, replicas, hpa, weight}:
(dict "ctx" $ "model" $m). Deployment names: don.trackDeployment. */}}
{{- define "don.tracks" -}}
{{- $ctx := .ctx -}}
{{- $m := .model -}}
{{- $route := eq (include "don.splitMode" $ctx) "route" -}}
{{- $canary := $m.canary.version -}}
{{- $stableReplicas := int $ctx.Values.serving.deployment.stableReplicas -}}
{{- $stable := include "don.trackDeployment" (dict "model" $m "track" "stable") -}}
{{- $canaryName := include "don.trackDeployment" (dict "model" $m "track" "canary") -}}
{{- $tracks := list -}}
{{- if $ctx.Values.operator.enabled -}}
{{- /* The operator's target (Flagger's model): the canary Deployment runs the desired version and
the operator owns its replicas; it creates the stable Deployment itself from this one. */ -}}
{{- $tracks = append $tracks (dict "track" "canary" "deployment" $canaryName "version" (int $m.version) "replicas" 0 "hpa" false "weight" 0 "operator" true) -}}
{{- else if not $canary -}}
{{- $tracks = append $tracks (dict "track" "stable" "deployment" $stable "version" (int $m.version) "replicas" $stableReplicas "hpa" true "weight" 100) -}}
{{- else -}}
{{- $p := int $m.canary.trafficPercent -}}
{{- $split := include "don.replicaSplit" (dict "total" $stableReplicas "percent" $p) | fromJsonArray -}}
{{- /* In ratio mode the replica counts ARE the split, so no HPA may change them. */ -}}
{{- $tracks = append $tracks (dict "track" "stable" "deployment" $stable "version" (int $m.version) "replicas" (ternary $stableReplicas (index $split 0) $route) "hpa" $route "weight" (sub 100 $p)) -}}
{{- $tracks = append $tracks (dict "track" "canary" "deployment" $canaryName "version" (int $canary) "replicas" (ternary $stableReplicas (index $split 1) $route) "hpa" $route "weight" $p) -}}
{{- end -}}
{{- toJson $tracks -}}
{{- end -}}
