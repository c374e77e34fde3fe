{{/* ---------- names and labels ---------- */}}

{{- define "don.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "don.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "don.selectorLabels" -}}
app.kubernetes.io/name: {{ include "don.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "don.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{ include "don.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: don-predictor
{{- end -}}

{{/* Labels of one component: pass (dict "ctx" $ "component" "predictor") */}}
{{- define "don.componentLabels" -}}
{{ include "don.labels" .ctx }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "don.componentSelector" -}}
{{ include "don.selectorLabels" .ctx }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/* ---------- images ---------- */}}

{{/* (dict "ctx" $ "image" .Values.images.modelServer) */}}
{{- define "don.image" -}}
{{- $v := .ctx.Values.images -}}
{{- $tag := default .ctx.Chart.AppVersion $v.tag -}}
{{- if $v.registry -}}
{{- printf "%s/%s:%s" $v.registry .image.repository $tag -}}
{{- else -}}
{{- printf "%s:%s" .image.repository $tag -}}
{{- end -}}
{{- end -}}

{{- define "don.imagePullSecrets" -}}
{{- with .Values.images.pullSecrets }}
imagePullSecrets:
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* ---------- capabilities: newer API only where the server has it (1.29+ target, 1.20 test cluster) ---------- */}}

{{- define "don.kubeAtLeast" -}}
{{- if semverCompare (printf ">=%s-0" .version) .ctx.Capabilities.KubeVersion.Version -}}true{{- end -}}
{{- end -}}

{{- define "don.hpaApiVersion" -}}
{{- if and (.Capabilities.APIVersions.Has "autoscaling/v2") (include "don.kubeAtLeast" (dict "ctx" . "version" "1.23")) -}}
autoscaling/v2
{{- else -}}
autoscaling/v2beta2
{{- end -}}
{{- end -}}

{{- define "don.cronJobApiVersion" -}}
{{- if and (.Capabilities.APIVersions.Has "batch/v1") (include "don.kubeAtLeast" (dict "ctx" . "version" "1.21")) -}}
batch/v1
{{- else -}}
batch/v1beta1
{{- end -}}
{{- end -}}

{{- define "don.pdbApiVersion" -}}
{{- if and (.Capabilities.APIVersions.Has "policy/v1") (include "don.kubeAtLeast" (dict "ctx" . "version" "1.21")) -}}
policy/v1
{{- else -}}
policy/v1beta1
{{- end -}}
{{- end -}}

{{- define "don.hasGatewayApi" -}}
{{- if .Capabilities.APIVersions.Has "gateway.networking.k8s.io/v1" -}}true{{- end -}}
{{- end -}}

{{/* ---------- security: the Pod Security Standard "restricted" profile ---------- */}}

{{- define "don.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: {{ .Values.podSecurity.runAsUser }}
runAsGroup: {{ .Values.podSecurity.runAsGroup }}
fsGroup: {{ .Values.podSecurity.fsGroup }}
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "don.containerSecurityContext" -}}
runAsNonRoot: true
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
capabilities:
  drop: [ALL]
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/* ---------- model store ---------- */}}

{{- define "don.s3SecretName" -}}
{{- if .Values.modelStore.s3.existingSecret -}}
{{- .Values.modelStore.s3.existingSecret -}}
{{- else -}}
{{- printf "%s-s3" (include "don.fullname" .) -}}
{{- end -}}
{{- end -}}

{{- define "don.s3Root" -}}
{{- $s3 := .Values.modelStore.s3 -}}
{{- if $s3.prefix -}}
{{- printf "s3://%s/%s" $s3.bucket (trimAll "/" $s3.prefix) -}}
{{- else -}}
{{- printf "s3://%s" $s3.bucket -}}
{{- end -}}
{{- end -}}

{{/* The store root as the training Job and the backup see it. */}}
{{- define "don.storeRoot" -}}
{{- if eq .Values.modelStore.type "s3" -}}
{{- include "don.s3Root" . -}}
{{- else -}}
{{- .Values.modelStore.pvc.mountPath -}}
{{- end -}}
{{- end -}}

{{/* storageUri of one version: (dict "ctx" $ "model" "don-rf" "version" 1); the layout <root>/<model>/<N>
is don_core.contract.storage_uri's (tests/chart/test_contract.py) */}}
{{- define "don.storageUri" -}}
{{- if eq .ctx.Values.modelStore.type "s3" -}}
{{- printf "%s/%s/%v" (include "don.s3Root" .ctx) .model (int .version) -}}
{{- else -}}
{{- printf "pvc://%s/%s/%v" .ctx.Values.modelStore.pvc.claimName .model (int .version) -}}
{{- end -}}
{{- end -}}

{{/* AWS_* environment from the S3 Secret (never a literal credential). */}}
{{- define "don.s3Env" -}}
{{- $s3 := .Values.modelStore.s3 -}}
- name: AWS_ACCESS_KEY_ID
  valueFrom:
    secretKeyRef: {name: {{ include "don.s3SecretName" . }}, key: AWS_ACCESS_KEY_ID}
- name: AWS_SECRET_ACCESS_KEY
  valueFrom:
    secretKeyRef: {name: {{ include "don.s3SecretName" . }}, key: AWS_SECRET_ACCESS_KEY}
- name: AWS_REGION
  value: {{ $s3.region | quote }}
{{- if $s3.endpoint }}
- name: AWS_ENDPOINT_URL
  value: {{ printf "%s://%s" (ternary "https" "http" $s3.useHttps) $s3.endpoint | quote }}
{{- end }}
{{- end -}}

{{/* ---------- tracing ---------- */}}

{{- define "don.otelEndpoint" -}}
{{- if .Values.tracing.endpoint -}}
{{- .Values.tracing.endpoint -}}
{{- else if .Values.tracing.collector.enabled -}}
{{- printf "http://%s-otel-collector.%s.svc.cluster.local:4318" (include "don.fullname" .) .Release.Namespace -}}
{{- end -}}
{{- end -}}

{{/* (dict "ctx" $ "service" "don-rf") */}}
{{- define "don.otelEnv" -}}
{{- $t := .ctx.Values.tracing -}}
{{- $endpoint := include "don.otelEndpoint" .ctx -}}
{{- if and $t.enabled $endpoint }}
- name: OTEL_EXPORTER_OTLP_ENDPOINT
  value: {{ $endpoint | quote }}
- name: OTEL_EXPORTER_OTLP_PROTOCOL
  value: http/protobuf
- name: OTEL_TRACES_EXPORTER
  value: otlp
- name: OTEL_SERVICE_NAME
  value: {{ .service | quote }}
- name: OTEL_TRACES_SAMPLER
  value: {{ $t.sampler | quote }}
- name: OTEL_TRACES_SAMPLER_ARG
  value: {{ $t.samplerArg | quote }}
- name: OTEL_RESOURCE_ATTRIBUTES
  value: {{ printf "service.namespace=%s,k8s.namespace.name=%s,%s" (include "don.fullname" .ctx) .ctx.Release.Namespace $t.resourceAttributes | trimSuffix "," | quote }}
{{- else }}
- name: OTEL_SDK_DISABLED
  value: "true"
{{- end }}
{{- end -}}

{{/* ---------- API token ---------- */}}

{{- define "don.apiTokenSecretName" -}}
{{- if .Values.apiToken.existingSecret -}}
{{- .Values.apiToken.existingSecret -}}
{{- else -}}
{{- printf "%s-api-token" (include "don.fullname" .) -}}
{{- end -}}
{{- end -}}

{{- define "don.apiTokenEnv" -}}
{{- if .Values.apiToken.enabled }}
- name: DON_API_TOKEN_FILE
  value: /var/run/secrets/don/token
{{- end }}
{{- end -}}

{{- define "don.apiTokenVolume" -}}
{{- if .Values.apiToken.enabled }}
- name: api-token
  secret:
    secretName: {{ include "don.apiTokenSecretName" . }}
    defaultMode: 0440
    items:
      - {key: token, path: token}
{{- end }}
{{- end -}}

{{- define "don.apiTokenMount" -}}
{{- if .Values.apiToken.enabled }}
- name: api-token
  mountPath: /var/run/secrets/don
  readOnly: true
{{- end }}
{{- end -}}

{{/* ---------- models ---------- */}}

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
{{- printf "http://%s.%s.svc.cluster.local" .model.name $ctx.Release.Namespace -}}
{{- else if eq $ctx.Values.kserve.deploymentMode "Standard" -}}
{{- printf "http://%s-predictor.%s.svc.cluster.local" .model.name $ctx.Release.Namespace -}}
{{- else -}}
{{- printf "http://%s.%s.svc.cluster.local" .model.name $ctx.Release.Namespace -}}
{{- end -}}
{{- end -}}

{{/* Labels every predictor pod carries (NetworkPolicies and PDBs select on them). */}}
{{- define "don.predictorPodLabels" -}}
{{ include "don.componentSelector" (dict "ctx" .ctx "component" "predictor") }}
app.kubernetes.io/part-of: don-predictor
don-predictor.io/model: {{ .model.name }}
{{- end -}}

{{/* (stable canary) replicas for `percent` on the canary out of `total`: THE replica-split rule,
the same as ops/rollout/traffic.replica_split (a test compares the two): the canary gets
ceil(total * p / 100) replicas, at least 1 and at most total - 1; a total of 1 runs one of each.
Returns JSON [stable, canary]. (dict "total" 2 "percent" 25) */}}
{{- define "don.replicaSplit" -}}
{{- $total := int .total -}}
{{- $p := int .percent -}}
{{- if le $p 0 -}}
{{- toJson (list $total 0) -}}
{{- else if ge $p 100 -}}
{{- toJson (list 0 $total) -}}
{{- else if eq $total 1 -}}
{{- toJson (list 1 1) -}}
{{- else -}}
{{- $canary := min (sub $total 1) (max 1 (div (add (mul $total $p) 99) 100)) -}}
{{- toJson (list (sub $total $canary) $canary) -}}
{{- end -}}
{{- end -}}

{{/* JSON {model name: {url, serviceEnv}} for the helm test. serviceEnv is the prefix of the
<SERVICE>_SERVICE_HOST/_PORT variables Kubernetes injects for a same-namespace ClusterIP Service:
the test uses them when present, so it also works on clusters without cluster DNS. */}}
{{- define "don.testTargets" -}}
{{- $out := dict -}}
{{- range $key := list "rf" "tf" -}}
{{- $m := get $.Values.models $key -}}
{{- $service := "" -}}
{{- if not (get $.Values.helmTest.urls $m.name) -}}
{{- if eq $.Values.serving.engine "deployment" -}}
{{- $service = $m.name -}}
{{- else if eq $.Values.kserve.deploymentMode "Standard" -}}
{{- $service = printf "%s-predictor" $m.name -}}
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

