{{/* What every pod of the chart shares: images, the "restricted" security profile, the API token. */}}

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
