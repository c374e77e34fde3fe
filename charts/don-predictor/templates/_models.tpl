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

{{/* THE names of a model's serving objects, one home (the operator's defaults in
ops/rollout/routers.py follow them). (dict "model" $m "track" "stable"|"canary"): the track's
Deployment of the deployment engine, <object> (stable) and <object>-canary. */}}
{{- define "don.trackDeployment" -}}
{{- if eq .track "stable" -}}{{ .model.object }}{{- else -}}{{ printf "%s-%s" .model.object .track }}{{- end -}}
{{- end -}}

{{/* A track's Service: the deployment engine's <object>-stable / <object>-canary, KServe
Standard's <object>-predictor / <object>-predictor-canary (KServe names them); empty for Knative
(no Service per track). (dict "ctx" $ "model" $m "track" "stable"|"canary") */}}
{{- define "don.trackService" -}}
{{- if eq .ctx.Values.serving.engine "deployment" -}}
{{- printf "%s-%s" .model.object .track -}}
{{- else if eq .ctx.Values.kserve.deploymentMode "Standard" -}}
{{- printf "%s-predictor%s" .model.object (ternary "" (printf "-%s" .track) (eq .track "stable")) -}}
{{- end -}}
{{- end -}}

{{/* The Service callers use for a model: the deployment engine's <object> (stable and canary pods
alike), KServe Standard's <object>-predictor, Knative's <object>. (dict "ctx" $ "model" $m) */}}
{{- define "don.modelService" -}}
{{- if and (ne .ctx.Values.serving.engine "deployment") (eq .ctx.Values.kserve.deploymentMode "Standard") -}}
{{- printf "%s-predictor" .model.object -}}
{{- else -}}
{{- .model.object -}}
{{- end -}}
{{- end -}}

{{/* Cluster-internal base URL of a model: (dict "ctx" $ "model" $m) */}}
{{- define "don.modelUrl" -}}
{{- $override := get .ctx.Values.helmTest.urls .model.name -}}
{{- if $override -}}
{{- $override -}}
{{- else -}}
{{- printf "http://%s.%s.svc.cluster.local" (include "don.modelService" .) .ctx.Release.Namespace -}}
{{- end -}}
{{- end -}}

{{/* JSON {track: base URL} of a model's stable and canary tracks for the console (the Services
the rollout operator's analysis calls): don.trackService of each. None for Knative (its tag
routes exist only while a canary runs, and latest- is the stable otherwise, so a track label would
lie) or with a helmTest.urls override. (dict "ctx" $ "model" $m) */}}
{{- define "don.modelTrackUrls" -}}
{{- $out := dict -}}
{{- if not (get .ctx.Values.helmTest.urls .model.name) -}}
{{- range $track := list "stable" "canary" -}}
{{- with include "don.trackService" (dict "ctx" $.ctx "model" $.model "track" $track) -}}
{{- $_ := set $out $track (printf "http://%s.%s.svc.cluster.local" . $.ctx.Release.Namespace) -}}
{{- end -}}
{{- end -}}
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
{{- $knative := and (ne $.Values.serving.engine "deployment") (ne $.Values.kserve.deploymentMode "Standard") -}}
{{- if not (or (get $.Values.helmTest.urls $m.name) $knative) -}}
{{- $service = include "don.modelService" (dict "ctx" $ "model" $m) -}}
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
