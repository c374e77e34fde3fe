{{/* One InferenceService predictor spec: (dict "ctx" $ "model" $m "version" N) */}}
{{- define "don.isvcPredictor" -}}
{{- $ctx := .ctx -}}
{{- $v := $ctx.Values -}}
{{- $standard := eq $v.kserve.deploymentMode "Standard" -}}
serviceAccountName: {{ include "don.predictorServiceAccount" $ctx }}
automountServiceAccountToken: false
labels:
  {{- include "don.predictorPodLabels" (dict "ctx" $ctx "model" .model) | nindent 2 }}
  don-predictor.io/model-version: {{ .version | quote }}
minReplicas: {{ $v.serving.autoscaling.minReplicas }}
maxReplicas: {{ $v.serving.autoscaling.maxReplicas }}
{{- if $standard }}
scaleMetric: cpu
scaleMetricType: Utilization
scaleTarget: {{ $v.serving.autoscaling.targetCPUUtilizationPercentage }}
{{- else }}
scaleMetric: concurrency
scaleTarget: {{ $v.serving.autoscaling.targetConcurrency }}
{{- end }}
{{- if $v.serving.payloadLogger.enabled }}
logger:
  mode: {{ $v.serving.payloadLogger.mode }}
  url: {{ $v.serving.payloadLogger.url | quote }}
{{- end }}
securityContext:
  {{- include "don.podSecurityContext" $ctx | nindent 2 }}
{{- with include "don.imagePullSecrets" $ctx }}{{ . | trim | nindent 0 }}{{ end }}
model:
  name: kserve-container   # the runtime's container; KServe merges the two
  modelFormat:
    name: {{ get $v.kserve.runtime.formats .model.family }}
    version: "1"
  runtime: {{ include "don.runtimeName" $ctx }}
  # KServe passes --model_name=<InferenceService name> (the release-prefixed object name) and appends
  # these args: the model keeps its own name (API path /v1/models/<name>).
  args: [{{ printf "--model_name=%s" .model.name | quote }}]
  protocolVersion: v2
  storageUri: {{ include "don.storageUri" (dict "ctx" $ctx "model" .model.name "version" .version) | quote }}
  env:
    - name: DON_MODEL_VERSION
      value: {{ .version | quote }}
    {{- with include "don.apiTokenEnv" $ctx }}{{ . | trim | nindent 4 }}{{ end }}
    {{- with include "don.recordsEnv" $ctx }}{{ . | trim | nindent 4 }}{{ end }}
    {{- include "don.otelEnv" (dict "ctx" $ctx "service" .model.name) | trim | nindent 4 }}
  resources:
    {{- toYaml $v.serving.resources | nindent 4 }}
  securityContext:
    {{- include "don.containerSecurityContext" $ctx | nindent 4 }}
  volumeMounts:
    - {name: tmp, mountPath: /tmp}
    {{- with include "don.apiTokenMount" $ctx }}{{ . | trim | nindent 4 }}{{ end }}
    {{- with include "don.recordsMount" $ctx }}{{ . | trim | nindent 4 }}{{ end }}
    {{- include "don.mirrorMount" $ctx | nindent 4 }}
volumes:
  - name: tmp
    emptyDir: {sizeLimit: 256Mi}
  {{- with include "don.apiTokenVolume" $ctx }}{{ . | trim | nindent 2 }}{{ end }}
  {{- with include "don.recordsVolume" $ctx }}{{ . | trim | nindent 2 }}{{ end }}
  {{- include "don.mirrorVolume" . | nindent 2 }}
{{- end -}}
