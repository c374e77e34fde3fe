{{/* The models of `models`: per-model names, URLs, labels and the canary replica split. */}}

{{/* THE way templates walk `models`: a JSON list sorted by key, each entry the model's values plus
`key` and `object`, the name of its Kubernetes objects: <fullname>-<key>, so that two releases
share a namespace (`name` stays the model's own: its API path and store folder). The fullname part
is cut to 30 characters so that the names KServe and Knative derive from an InferenceService
(latest-<object>-predictor, <object>-predictor-00001) remain DNS labels. */}}
{{- define "don.models" -}}
{{- $prefix := include "don.fullname" . | trunc 30 | trimSuffix "-" -}}
{{- $out := list -}}
{{- range $key, $m := .Values.models -}}
{{- $out = append $out (merge (dict "key" $key "object" (printf "%s-%s" $prefix $key)) $m) -}}
{{- end -}}
{{- toJson $out -}}
{{- end -}}

{{/* The predictor's service account (references the S3 Secret for KServe's storage initializer). */}}
{{- define "don.predictorServiceAccount" -}}
{{- printf "%s-predictor" (include "don.fullname" .) -}}
{{- end -}}

{{/* Cluster-internal base URL of a model: (dict "ctx" $ "model" $m) */}}
{{- define "don.modelUrl" -}}
{{- $ctx := .ctx -}}
{{- $override := get $ctx.Values.helmTest.urls .model.name -}}
{{- if $override -}}
{{- $override -}}
{{- else if eq $ctx.Values.serving.engine "deployment" -}}
{{- printf "http://%s.%s.svc.cluster.local" .model.object $ctx.Release.Namespace -}}
{{- else if eq $ctx.Values.kserve.deploymentMode "Standard" -}}
{{- printf "http://%s-predictor.%s.svc.cluster.local" .model.object $ctx.Release.Namespace -}}
{{- else -}}
{{- printf "http://%s.%s.svc.cluster.local" .model.object $ctx.Release.Namespace -}}
{{- end -}}
{{- end -}}

{{/* JSON {track: base URL} of a model's stable and canary tracks for the console (the Services
the rollout operator's analysis calls, ops/rollout/routers.py): the deployment engine's
<object>-stable / -canary, KServe Standard's <object>-predictor / -predictor-canary. None for
Knative (its tag routes exist only while a canary runs, and latest- is the stable otherwise, so
a track label would lie) or with a helmTest.urls override. (dict "ctx" $ "model" $m) */}}
{{- define "don.modelTrackUrls" -}}
{{- $ctx := .ctx -}}
{{- $ns := $ctx.Release.Namespace -}}
{{- $o := .model.object -}}
{{- $names := dict -}}
{{- if get $ctx.Values.helmTest.urls .model.name -}}
{{- else if eq $ctx.Values.serving.engine "deployment" -}}
{{- $names = dict "stable" (printf "%s-stable" $o) "canary" (printf "%s-canary" $o) -}}
{{- else if eq $ctx.Values.kserve.deploymentMode "Standard" -}}
{{- $names = dict "stable" (printf "%s-predictor" $o) "canary" (printf "%s-predictor-canary" $o) -}}
{{- end -}}
{{- $out := dict -}}
{{- range $track, $service := $names -}}
{{- $_ := set $out $track (printf "http://%s.%s.svc.cluster.local" $service $ns) -}}
{{- end -}}
{{- toJson $out -}}
{{- end -}}

{{/* Labels every predictor pod carries (NetworkPolicies and PDBs select on them). */}}
{{- define "don.predictorPodLabels" -}}
{{ include "don.componentSelector" (dict "ctx" .ctx "component" "predictor") }}
app.kubernetes.io/part-of: don-predictor
don-predictor.io/model: {{ .model.name }}
{{- end -}}

{{/* (stable canary) replicas for `percent` on the canary out of `total`: THE replica-split rule,
the same as ops/rollout/traffic.replica_split (a test compares the two): up to 50 % the stable
keeps `total` replicas and the canary gets the nearest count to the share (at least 1); above 50 %
the canary runs `total` and the stable the nearest count (at least 1). Returns JSON [stable, canary].
(dict "total" 2 "percent" 25) */}}
{{- define "don.replicaSplit" -}}
{{- $total := max 1 (int .total) -}}
{{- $p := int .percent -}}
{{- if le $p 0 -}}
{{- toJson (list $total 0) -}}
{{- else if ge $p 100 -}}
{{- toJson (list 0 $total) -}}
{{- else if le $p 50 -}}
{{- toJson (list $total (max 1 (div (add (mul 2 $total $p) (sub 100 $p)) (mul 2 (sub 100 $p))))) -}}
{{- else -}}
{{- toJson (list (max 1 (div (add (mul 2 $total (sub 100 $p)) $p) (mul 2 $p))) $total) -}}
{{- end -}}
{{- end -}}

{{/* JSON {model name: {url, serviceEnv}} for the helm test. serviceEnv is the prefix of the
<SERVICE>_SERVICE_HOST/_PORT variables Kubernetes injects for a same-namespace ClusterIP Service:
the test uses them when present, so it also works on clusters without cluster DNS. */}}
{{- define "don.testTargets" -}}
{{- $out := dict -}}
{{- range $m := include "don.models" $ | fromJsonArray -}}
{{- $service := "" -}}
{{- if not (get $.Values.helmTest.urls $m.name) -}}
{{- if eq $.Values.serving.engine "deployment" -}}
{{- $service = $m.object -}}
{{- else if eq $.Values.kserve.deploymentMode "Standard" -}}
{{- $service = printf "%s-predictor" $m.object -}}
{{- end -}}
{{- end -}}
{{- $env := $service | upper | replace "-" "_" -}}
{{- $_ := set $out $m.name (dict "url" (include "don.modelUrl" (dict "ctx" $ "model" $m)) "serviceEnv" $env) -}}
{{- end -}}
{{- toJson $out -}}
{{- end -}}

{{/* metadata.labels and annotations of a model's InferenceService: (dict "ctx" $ "model" $m) */}}
{{- define "don.isvcMetadata" -}}
{{- $standard := eq .ctx.Values.kserve.deploymentMode "Standard" -}}
labels:
  {{- include "don.componentLabels" (dict "ctx" .ctx "component" "predictor") | nindent 2 }}
  don-predictor.io/model: {{ .model.name }}
annotations:
  serving.kserve.io/deploymentMode: {{ ternary "Standard" "Serverless" $standard }}
  serving.kserve.io/enable-prometheus-scraping: "true"
  {{- if $standard }}
  # KServe owns the HPA (no chart HPA for KServe predictors, so the two never fight).
  serving.kserve.io/autoscalerClass: hpa
  {{- end }}
{{- end -}}
