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
Labels on every object of the release: the chart's own and commonLabels.
*/}}
{{- define "keysmith.labels" -}}
{{- include "keysmith.objectLabels" (dict "root" .) }}
{{- end }}

{{/*
Labels of one object: the chart's own (with app.kubernetes.io/component when "component" is
given), then "extra" (an object's own labels value such as serviceMonitor.labels), then
commonLabels; where they share a key the first wins, so a value's labels may repeat commonLabels
without rendering a duplicate key. Argument: dict "root" (the chart's context), optional
"component" and "extra".
*/}}
{{- define "keysmith.objectLabels" -}}
{{- $root := .root }}
{{- $own := include "keysmith.selectorLabels" $root | fromYaml }}
{{- with .component }}
{{- $_ := set $own "app.kubernetes.io/component" . }}
{{- end }}
{{- $_ := set $own "helm.sh/chart" (include "keysmith.chart" $root) }}
{{- $_ = set $own "app.kubernetes.io/version" $root.Chart.AppVersion }}
{{- $_ = set $own "app.kubernetes.io/managed-by" $root.Release.Service }}
{{- $_ = set $own "app.kubernetes.io/part-of" "keysmith" }}
{{- merge $own (.extra | default dict) $root.Values.commonLabels | toYaml }}
{{- end }}

{{/*
Selector labels shared by every component; add app.kubernetes.io/component to tell them apart.
*/}}
{{- define "keysmith.selectorLabels" -}}
app.kubernetes.io/name: {{ include "keysmith.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/*
ServiceAccount of one component (combined, controller or verifier): its serviceAccount.name, else
<fullname>-<component> (<fullname> for combined). Argument: list of the chart's context and the
component.
*/}}
{{- define "keysmith.serviceAccountName" -}}
{{- $root := index . 0 }}
{{- $component := index . 1 }}
{{- with (index $root.Values $component).serviceAccount.name }}
{{- . }}
{{- else }}
{{- include "keysmith.fullname" $root }}{{ if ne $component "combined" }}-{{ $component }}{{ end }}
{{- end }}
{{- end }}

{{/*
ServiceAccount of the controller. With mode=combined one ServiceAccount runs `keysmith run`, so
both names resolve to it and it is bound to the controller's and the verifier's roles.
*/}}
{{- define "keysmith.controllerServiceAccountName" -}}
{{- include "keysmith.serviceAccountName" (list . (ternary "combined" "controller" (eq .Values.mode "combined"))) }}
{{- end }}

{{/*
CEL: the tokens of status (their names, ids, hashes, times, replaced tokens and the rotation
values they answered) are the same in `object` and `oldObject`, but for lastUsedAt. Token names
are unique (a list map keyed by name), so equal sizes and a match for every new entry make the
lists equal but for lastUsedAt (of the token, its previous and earlier ones). The lists are bounded
by the CRD (tokens 8, earlier 3), which bounds the cost.
*/}}
{{- define "keysmith.tokensUnchangedButLastUsedAt" -}}
object.?status.?tokens.orValue([]).size() == oldObject.?status.?tokens.orValue([]).size() &&
object.?status.?tokens.orValue([]).all(t, oldObject.?status.?tokens.orValue([]).exists(o,
o.name == t.name && o.id == t.id && o.sha256 == t.sha256 && o.issuedAt == t.issuedAt &&
o.?expiresAt == t.?expiresAt &&
o.?previous.?id == t.?previous.?id && o.?previous.?sha256 == t.?previous.?sha256 &&
o.?previous.?validUntil == t.?previous.?validUntil &&
o.?earlier.orValue([]).map(e, [e.id, e.sha256, e.validUntil]) ==
t.?earlier.orValue([]).map(e, [e.id, e.sha256, e.validUntil]) &&
o.?rotationTrigger == t.?rotationTrigger && o.?rotateAnnotation == t.?rotateAnnotation &&
o.?rotateSlotAnnotation == t.?rotateSlotAnnotation))
{{- end }}

{{/*
ServiceAccount of the verifier (see keysmith.controllerServiceAccountName).
*/}}
{{- define "keysmith.verifierServiceAccountName" -}}
{{- include "keysmith.serviceAccountName" (list . (include "keysmith.verifierComponent" .)) }}
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
Container image reference: [registry/]repository, then @digest or :tag (default: appVersion).
*/}}
{{- define "keysmith.image" -}}
{{- $name := .Values.image.repository }}
{{- with .Values.image.registry }}
{{- $name = printf "%s/%s" . $name }}
{{- end }}
{{- if .Values.image.digest }}
{{- printf "%s@%s" $name .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" $name (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/*
The controllers' Lease: leaderElection.leaseName, else <fullname>-controller, with a hash of the
selector when there is one, so no two releases or shards in one namespace compete for one Lease.
*/}}
{{- define "keysmith.leaseName" -}}
{{- if .Values.leaderElection.leaseName }}
{{- .Values.leaderElection.leaseName }}
{{- else if .Values.selector }}
{{- printf "%s-controller-%s" (include "keysmith.fullname" .) (sha256sum .Values.selector | trunc 10) }}
{{- else }}
{{- include "keysmith.fullname" . }}-controller
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
Environment every pod gets: its own name and namespace from the downward API, and RUST_LOG with
logLevel. The controller holds its Lease in POD_NAMESPACE (the release namespace) under the
identity POD_NAME.
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
{{- with .Values.logLevel }}
- name: RUST_LOG
  value: {{ . | quote }}
{{- end }}
{{- end }}

{{/*
Whether the verifier Deployment's replica count belongs to a HorizontalPodAutoscaler: "true" or "".
*/}}
{{- define "keysmith.verifierAutoscaled" -}}
{{- if and (eq .Values.mode "split") .Values.verifier.autoscaling.enabled }}true{{ end }}
{{- end }}

{{/*
One Keysmith Deployment; the three deployment-*.yaml templates differ only in these arguments (a
dict): root (the chart's context), component (combined, controller or verifier), command (the
`keysmith` subcommand), values (the component's values), serviceAccount, api (true when the pods
serve the verification API on port 8080), leader (true when they elect a leader) and autoscaling
(the verifier's autoscaling values when a HorizontalPodAutoscaler owns the replica count, else
absent).
*/}}
{{- define "keysmith.deployment" -}}
{{- $root := .root }}
{{- $v := .values }}
{{- $selector := merge (include "keysmith.selectorLabels" $root | fromYaml) (dict "app.kubernetes.io/component" .component) }}
{{- /* The most pods there may be: what the default spread across nodes is for. */}}
{{- $maxReplicas := $v.replicas }}
{{- with .autoscaling }}{{ $maxReplicas = .maxReplicas }}{{ end }}
{{- /* The usage API is served where the verification API is (templates/usage-api.yaml). */}}
{{- $usage := and .api $root.Values.usage.enabled }}
{{- $leakKeys := and .api $root.Values.leakReports.githubKeysSecret }}
{{- $leakToken := and .api $root.Values.leakReports.tokenSecret }}
{{- $mounts := or $usage $leakKeys $leakToken }}
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ .name }}
  namespace: {{ $root.Release.Namespace }}
  labels:
    {{- include "keysmith.labels" $root | nindent 4 }}
    app.kubernetes.io/component: {{ .component }}
spec:
  {{- /* Left out under a HorizontalPodAutoscaler, or every upgrade would reset its count. */}}
  {{- if not .autoscaling }}
  replicas: {{ $v.replicas }}
  {{- end }}
  revisionHistoryLimit: {{ $root.Values.revisionHistoryLimit }}
  strategy:
    {{- with $v.strategy }}
    {{- toYaml . | nindent 4 }}
    {{- else }}
    type: RollingUpdate
    rollingUpdate:
      # Never drop below the current number of ready pods during a rollout: verifiers keep
      # answering, and a standby controller stays ready to take over the Lease.
      maxUnavailable: 0
      maxSurge: 1
    {{- end }}
  selector:
    matchLabels:
      {{- toYaml $selector | nindent 6 }}
  template:
    metadata:
      labels:
        {{- /* merge keeps the selector's labels where podLabels or commonLabels name the same key. */}}
        {{- merge (deepCopy $selector) $v.podLabels $root.Values.commonLabels | toYaml | nindent 8 }}
      {{- with $v.podAnnotations }}
      annotations:
        {{- toYaml . | nindent 8 }}
      {{- end }}
    spec:
      serviceAccountName: {{ .serviceAccount }}
      {{- with $v.priorityClassName }}
      priorityClassName: {{ . }}
      {{- end }}
      {{- with $v.podSecurityContext }}
      securityContext:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $root.Values.imagePullSecrets }}
      imagePullSecrets:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      containers:
        - name: keysmith
          image: {{ include "keysmith.image" $root }}
          imagePullPolicy: {{ $root.Values.image.pullPolicy }}
          args:
            - {{ .command }}
            {{- include "keysmith.commonArgs" $root | nindent 12 }}
            {{- if .leader }}
            - {{ printf "--lease-name=%s" (include "keysmith.leaseName" $root) | quote }}
            - {{ printf "--max-concurrent-reconciles=%d" (int $root.Values.maxConcurrentReconciles) }}
            {{- if $root.Values.personalKeys.enabled }}
            - --personal-keys
            - {{ printf "--personal-key-max-lifetime=%s" $root.Values.personalKeys.maxLifetime | quote }}
            {{- end }}
            {{- /* Only beside the admission policy that guards spec.access (access-list-policy.yaml). */}}
            {{- if $root.Values.accessLists.enabled }}
            - --access-lists
            {{- end }}
            {{- end }}
            {{- /* Only what serves the verifier API sees client addresses. */}}
            {{- if .api }}
            {{- with $root.Values.trustedProxies }}
            - {{ printf "--trusted-proxies=%s" (join "," .) | quote }}
            {{- end }}
            {{- with $root.Values.acceptNamespaces }}
            - {{ printf "--accept-namespaces=%s" (join "," .) | quote }}
            {{- end }}
            {{- with $root.Values.personalKeys.tokenReviewAudiences }}
            - {{ printf "--token-review-personal-audiences=%s" (join "," .) | quote }}
            {{- end }}
            - {{ printf "--token-metrics-max-tokens=%d" (int $root.Values.tokenMetrics.maxTokens) }}
            - {{ printf "--max-connections-per-peer=%d" (int $root.Values.connections.maxPerPeer) }}
            {{- end }}
            {{- if $usage }}
            - --usage-listen=0.0.0.0:8443
            - --usage-tls-cert-file=/etc/keysmith/usage/tls.crt
            - --usage-tls-key-file=/etc/keysmith/usage/tls.key
            - --usage-peer-ca-file=/etc/keysmith/usage/ca.crt
            - {{ printf "--usage-service=%s-verifier" (include "keysmith.fullname" $root) }}
            - {{ printf "--usage-max-tokens=%d" (int $root.Values.usage.maxTokens) }}
            {{- end }}
            {{- if $leakKeys }}
            - --leak-report-github-keys-file=/etc/keysmith/leaks/github/github-keys.json
            {{- end }}
            {{- if $leakToken }}
            - --leak-report-token-file=/etc/keysmith/leaks/token/token
            {{- end }}
            {{- range $v.extraArgs }}
            - {{ . | quote }}
            {{- end }}
          env:
            {{- include "keysmith.env" $root | nindent 12 }}
            {{- with $v.extraEnv }}
            {{- toYaml . | nindent 12 }}
            {{- end }}
          ports:
            {{- if .api }}
            - name: http
              containerPort: 8080
              protocol: TCP
            {{- end }}
            {{- if $usage }}
            - name: usage
              containerPort: 8443
              protocol: TCP
            {{- end }}
            - name: metrics
              containerPort: 9090
              protocol: TCP
          {{- range $probe := list "livenessProbe" "readinessProbe" "startupProbe" }}
          {{- with index $v $probe }}
          {{ $probe }}:
            {{- toYaml . | nindent 12 }}
          {{- end }}
          {{- end }}
          resources:
            {{- toYaml $v.resources | nindent 12 }}
          {{- with $v.securityContext }}
          securityContext:
            {{- toYaml . | nindent 12 }}
          {{- end }}
          {{- if or $v.extraVolumeMounts $mounts }}
          volumeMounts:
            {{- if $usage }}
            - name: usage-tls
              mountPath: /etc/keysmith/usage
              readOnly: true
            {{- end }}
            {{- if $leakKeys }}
            - name: leak-report-github-keys
              mountPath: /etc/keysmith/leaks/github
              readOnly: true
            {{- end }}
            {{- if $leakToken }}
            - name: leak-report-token
              mountPath: /etc/keysmith/leaks/token
              readOnly: true
            {{- end }}
            {{- with $v.extraVolumeMounts }}
            {{- toYaml . | nindent 12 }}
            {{- end }}
          {{- end }}
      {{- if or $v.extraVolumes $mounts }}
      volumes:
        {{- if $usage }}
        - name: usage-tls
          secret:
            secretName: {{ include "keysmith.fullname" $root }}-usage-tls
        {{- end }}
        {{- if $leakKeys }}
        - name: leak-report-github-keys
          secret:
            secretName: {{ $leakKeys }}
        {{- end }}
        {{- if $leakToken }}
        - name: leak-report-token
          secret:
            secretName: {{ $leakToken }}
        {{- end }}
        {{- with $v.extraVolumes }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      {{- end }}
      {{- with $v.nodeSelector }}
      nodeSelector:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $v.tolerations }}
      tolerations:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $v.affinity }}
      affinity:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- if $v.topologySpreadConstraints }}
      topologySpreadConstraints:
        {{- toYaml $v.topologySpreadConstraints | nindent 8 }}
      {{- else if gt (int $maxReplicas) 1 }}
      # Replicas on different nodes, so one node's loss or drain takes out at most one of them;
      # ScheduleAnyway still schedules them on a cluster with fewer nodes.
      topologySpreadConstraints:
        - maxSkew: 1
          topologyKey: kubernetes.io/hostname
          whenUnsatisfiable: ScheduleAnyway
          labelSelector:
            matchLabels:
              {{- toYaml $selector | nindent 14 }}
      {{- end }}
{{- end }}

{{/*
What a ServiceMonitor endpoint and a PodMonitor endpoint share, from serviceMonitor or podMonitor.
*/}}
{{- define "keysmith.scrapeEndpoint" -}}
path: /metrics
interval: {{ .interval }}
{{- with .scrapeTimeout }}
scrapeTimeout: {{ . }}
{{- end }}
# keysmith_token_expiry_timestamp_seconds carries the ApiKey's `namespace` label; keep it
# instead of renaming it to exported_namespace in favour of the pod's namespace.
honorLabels: true
{{- with .relabelings }}
relabelings:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .metricRelabelings }}
metricRelabelings:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}
