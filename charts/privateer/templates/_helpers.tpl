{{/* The release's full name, cut to what object names allow. */}}
{{- define "privateer.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 50 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "privateer.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{/* privateer's webhook never rewrites its own Pods (objectSelector and config). */}}
app.kubernetes.io/part-of: privateer
{{- end -}}

{{- define "privateer.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "privateer.serviceAccountName" -}}
{{- default (include "privateer.fullname" .) .Values.serviceAccount.name -}}
{{- end -}}

{{/* The copy Jobs' ServiceAccount: config.copy.job.serviceAccountName, default privateer-copy. */}}
{{- define "privateer.copyServiceAccountName" -}}
{{- $copy := default dict .Values.config.copy -}}
{{- $job := default dict $copy.job -}}
{{- default "privateer-copy" $job.serviceAccountName -}}
{{- end -}}

{{- define "privateer.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{- define "privateer.tlsSecretName" -}}
{{- if and (eq .Values.tls.mode "secret") .Values.tls.secretName -}}
{{- .Values.tls.secretName -}}
{{- else -}}
{{- printf "%s-webhook-tls" (include "privateer.fullname" .) -}}
{{- end -}}
{{- end -}}

{{- define "privateer.webhookService" -}}
{{- printf "%s-webhook" (include "privateer.fullname" .) -}}
{{- end -}}

{{/* "true" when the validating webhook is on: forced, or any config.policy rule enabled. */}}
{{- define "privateer.validating" -}}
{{- $setting := toString .Values.webhook.validating.enabled -}}
{{- if eq $setting "auto" -}}
{{- $policy := default dict .Values.config.policy -}}
{{- $on := false -}}
{{- range $rule, $value := $policy -}}
{{- if and (kindIs "map" $value) $value.enabled -}}{{- $on = true -}}{{- end -}}
{{- end -}}
{{- $on -}}
{{- else -}}
{{- $setting -}}
{{- end -}}
{{- end -}}

{{/* The configuration file: the user's config with the keys the chart owns. */}}
{{- define "privateer.config" -}}
{{- $owned := dict
  "namespace" .Release.Namespace
  "webhook" (dict
    "listen" (printf "0.0.0.0:%d" (int .Values.webhook.port))
    "tlsCertFile" "/etc/privateer/tls/tls.crt"
    "tlsKeyFile" "/etc/privateer/tls/tls.key")
  "metrics" (dict "listen" (printf "0.0.0.0:%d" (int .Values.metrics.port)))
-}}
{{- toYaml (mergeOverwrite (deepCopy .Values.config) $owned) -}}
{{- end -}}
