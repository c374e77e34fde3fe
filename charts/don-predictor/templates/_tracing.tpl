{{/* OpenTelemetry: where spans go and the environment that sends them. */}}

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
