{{/* How the deployment engine splits traffic for one model: "route" (HTTPRoute weights) or "ratio". */}}
{{- define "don.splitMode" -}}
{{- if and .Values.serving.deployment.httpRoute.enabled (include "don.hasGatewayApi" .) -}}route{{- else -}}ratio{{- end -}}
{{- end -}}

{{/* The tracks of one model: list of dicts {track, deployment, version, replicas, hpa, weight}:
(dict "ctx" $ "model" $m). Deployment names follow the ModelRollout operator's defaults:
<model> (stable) and <model>-canary. */}}
{{- define "don.tracks" -}}
{{- $ctx := .ctx -}}
{{- $m := .model -}}
{{- $route := eq (include "don.splitMode" $ctx) "route" -}}
{{- $canary := $m.canary.version -}}
{{- $stableReplicas := int $ctx.Values.serving.deployment.stableReplicas -}}
{{- $tracks := list -}}
{{- if not $canary -}}
{{- $tracks = append $tracks (dict "track" "stable" "deployment" $m.name "version" (int $m.version) "replicas" $stableReplicas "hpa" true "weight" 100) -}}
{{- else -}}
{{- $p := int $m.canary.trafficPercent -}}
{{- $canaryReplicas := include "don.canaryReplicas" (dict "stable" $stableReplicas "percent" $p) | int -}}
{{- /* In ratio mode the replica counts ARE the split, so no HPA may change them. */ -}}
{{- $tracks = append $tracks (dict "track" "stable" "deployment" $m.name "version" (int $m.version) "replicas" $stableReplicas "hpa" $route "weight" (sub 100 $p)) -}}
{{- $tracks = append $tracks (dict "track" "canary" "deployment" (printf "%s-canary" $m.name) "version" (int $canary) "replicas" $canaryReplicas "hpa" $route "weight" $p) -}}
{{- end -}}
{{- toJson $tracks -}}
{{- end -}}
