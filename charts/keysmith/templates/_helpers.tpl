{{/*
Chart name, truncated to 63 characters (a DNS label).
*/}}
{{- define "keysmith.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Fully qualified app name: the release name, plus the chart name unless the release name already
contains it. Truncated to 52 characters so that "-controller-metrics" style suffixes stay within
the 63 characters of a DNS label.
*/}}
{{- define "keysmith.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 52 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 52 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 52 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/*
Chart label value.
*/}}
{{- define "keysmith.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Labels on every object of the release.
*/}}
{{- define "keysmith.labels" -}}
helm.sh/chart: {{ include "keysmith.chart" . }}
{{ include "keysmith.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: keysmith
{{- end }}

{{/*
Selector labels shared by every component; add app.kubernetes.io/component to tell them apart.
*/}}
{{- define "keysmith.selectorLabels" -}}
app.kubernetes.io/name: {{ include "keysmith.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/*
ServiceAccount of the controller. With mode=combined one ServiceAccount runs `keysmith run`, so
both names resolve to it and it is bound to the controller's and the verifier's roles.
*/}}
{{- define "keysmith.controllerServiceAccountName" -}}
{{- if eq .Values.mode "combined" }}
{{- include "keysmith.fullname" . }}
{{- else }}
{{- include "keysmith.fullname" . }}-controller
{{- end }}
{{- end }}

{{/*
ServiceAccount of the verifier (see keysmith.controllerServiceAccountName).
*/}}
{{- define "keysmith.verifierServiceAccountName" -}}
{{- if eq .Values.mode "combined" }}
{{- include "keysmith.fullname" . }}
{{- else }}
{{- include "keysmith.fullname" . }}-verifier
{{- end }}
{{- end }}

{{/*
Name of the Deployment that serves the verifier API: the verifier's, or the combined one.
*/}}
{{- define "keysmith.verifierDeploymentName" -}}
{{- if eq .Values.mode "combined" }}
{{- include "keysmith.fullname" . }}
{{- else }}
{{- include "keysmith.fullname" . }}-verifier
{{- end }}
{{- end }}

{{/*
Component label of the pods that serve the verifier API.
*/}}
{{- define "keysmith.verifierComponent" -}}
{{- if eq .Values.mode "combined" }}combined{{ else }}verifier{{ end }}
{{- end }}

{{/*
Container image reference; the tag defaults to the chart's appVersion.
*/}}
{{- define "keysmith.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/*
Flags every long-running command takes: scope (--namespace, --selector) and --log-format.
*/}}
{{- define "keysmith.commonArgs" -}}
- --log-format={{ .Values.logFormat }}
{{- if .Values.watchNamespace }}
- --namespace={{ .Values.watchNamespace }}
{{- end }}
{{- if .Values.selector }}
- {{ printf "--selector=%s" .Values.selector | quote }}
{{- end }}
{{- end }}

{{/*
Pod security context (restricted Pod Security Standard).
*/}}
{{- define "keysmith.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 65532
runAsGroup: 65532
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{/*
Container security context (restricted Pod Security Standard).
*/}}
{{- define "keysmith.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
runAsUser: 65532
runAsGroup: 65532
capabilities:
  drop: ["ALL"]
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{/*
Environment every pod gets: its own name and namespace from the downward API. The controller
holds its Lease in POD_NAMESPACE (the release namespace) under the identity POD_NAME.
*/}}
{{- define "keysmith.env" -}}
- name: POD_NAME
  valueFrom:
    fieldRef:
      fieldPath: metadata.name
- name: POD_NAMESPACE
  valueFrom:
    fieldRef:
      fieldPath: metadata.namespace
{{- end }}

{{/*
Liveness and readiness probes on the metrics port (9090), which every command serves.
*/}}
{{- define "keysmith.probes" -}}
livenessProbe:
  httpGet:
    path: /healthz
    port: metrics
  periodSeconds: 10
  failureThreshold: 3
readinessProbe:
  httpGet:
    path: /readyz
    port: metrics
  periodSeconds: 5
  failureThreshold: 2
{{- end }}
