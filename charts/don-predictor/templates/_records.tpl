{{/* ---------- prediction records: the predictors send to this release's recorder ---------- */}}

{{- define "don.recorderName" -}}
{{- printf "%s-recorder" (include "don.fullname" .) -}}
{{- end -}}

{{/* The recorder's in-cluster base URL (no trailing slash): records, the console, the lab gate;
recorder.recordsUrl when set (clusters without cluster DNS), else the Service's DNS name. */}}
{{- define "don.recorderUrl" -}}
{{- with .Values.recorder.recordsUrl -}}
{{- trimSuffix "/" . -}}
{{- else -}}
{{- printf "http://%s.%s.svc.cluster.local:%d" (include "don.recorderName" .) .Release.Namespace (int .Values.recorder.port) -}}
{{- end -}}
{{- end -}}

{{/* The Secret (key `token`) the recorder checks and the model servers send: never a value in a pod spec. */}}
{{- define "don.recorderTokenSecretName" -}}
{{- .Values.recorder.token.existingSecret | default (printf "%s-token" (include "don.recorderName" .)) -}}
{{- end -}}

{{/* Model server env (model_server/__main__.py: DON_RECORDS_*), only with the recorder enabled. */}}
{{- define "don.recordsEnv" -}}
{{- $r := .Values.recorder -}}
{{- if $r.enabled }}
- name: DON_RECORDS_URL
  value: {{ printf "%s/" (include "don.recorderUrl" .) | quote }}
- name: DON_RECORDS_TOKEN_FILE
  value: /var/run/secrets/don-records/token
- name: DON_RECORDS_SAMPLE_RATE
  value: {{ $r.sampleRate | quote }}
{{- end }}
{{- end -}}

{{- define "don.recordsVolume" -}}
{{- if .Values.recorder.enabled }}
- name: records-token
  secret:
    secretName: {{ include "don.recorderTokenSecretName" . }}
    defaultMode: 0440
    items:
      - {key: token, path: token}
{{- end }}
{{- end -}}

{{- define "don.recordsMount" -}}
{{- if .Values.recorder.enabled }}
- name: records-token
  mountPath: /var/run/secrets/don-records
  readOnly: true
{{- end }}
{{- end -}}
