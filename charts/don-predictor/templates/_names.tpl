{{/* Names and labels: the `helm create` conventions. */}}

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

{{/* The KServe ServingRuntime (namespaced): <fullname>-<kserve.runtime.name>. */}}
{{- define "don.runtimeName" -}}
{{- printf "%s-%s" (include "don.fullname" .) .Values.kserve.runtime.name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
