{{/* ---------- the ModelRollouts' steps (operator.rollout.steps) ---------- */}}
{{/* A list is used as given. Empty (the default), the automatic choice, made here only: the shadow
step first wherever the release can pair lab results (recorder.enabled: the lab gate reads the
recorder's pairs), then operator.rollout.canarySteps; without the recorder, the canary steps alone.
It applies on every engine; to keep shadows to the deployment engine, add
(eq .Values.serving.engine "deployment") to $shadowFirst. Renders a JSON list. */}}
{{- define "don.rolloutSteps" -}}
{{- $r := .Values.operator.rollout -}}
{{- $shadow := "shadow" -}}{{/* don_core.contract.SHADOW_STEP */}}
{{- if and $r.steps (eq (toString (first $r.steps)) $shadow) (not .Values.recorder.enabled) -}}
{{- fail "operator.rollout.steps begins with the shadow step, whose lab gate reads the recorder's lab pairs: set recorder.enabled=true, or leave steps empty for the automatic choice" -}}
{{- end -}}
{{- $steps := $r.steps | default (ternary (prepend $r.canarySteps $shadow) $r.canarySteps .Values.recorder.enabled) -}}
{{- if and (eq (toString (first $steps)) $shadow) (ne .Values.serving.engine "deployment") (not (regexMatch "^0+(s|m|h)?$" (toString $r.shadow.watch))) -}}
{{- fail "operator.rollout.shadow.watch needs serving.engine=deployment: on KServe the previous version does not run on as a shadow (the operator refuses it); set it to 0s" -}}
{{- end -}}
{{- toJson $steps -}}
{{- end -}}
