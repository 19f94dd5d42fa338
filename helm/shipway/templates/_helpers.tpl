{{/* Names: <release>-shipway unless the release name already says shipway. */}}
{{- define "shipway.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "shipway.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 50 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* One role's object name: <fullname>-<role> (fullname is at most 50 characters). */}}
{{- define "shipway.component" -}}
{{- printf "%s-%s" (include "shipway.fullname" .root) .component -}}
{{- end -}}

{{- define "shipway.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ include "shipway.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: shipway
{{- end -}}

{{/* Labels of one role's objects; selectorLabels are the stable subset. */}}
{{- define "shipway.componentLabels" -}}
{{ include "shipway.labels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "shipway.selectorLabels" -}}
app.kubernetes.io/name: {{ include "shipway.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "shipway.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{- define "shipway.modelNamespace" -}}
{{- default .Release.Namespace .Values.modelNamespace -}}
{{- end -}}

{{- define "shipway.secretName" -}}
{{- default (include "shipway.fullname" .) .Values.secrets.existingSecret -}}
{{- end -}}

{{/* The restricted Pod Security Standard, for every Shipway pod. */}}
{{- define "shipway.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 10001
runAsGroup: 10001
fsGroup: 10001
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "shipway.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
capabilities:
  drop: [ALL]
{{- end -}}

{{/* Environment of every Shipway process: the ConfigMap, then the Secret's keys. */}}
{{- define "shipway.env" -}}
- name: SHIPWAY_DATABASE_URL
  valueFrom: {secretKeyRef: {name: {{ include "shipway.secretName" . }}, key: database-url}}
- name: SHIPWAY_BROKER_URL
  valueFrom: {secretKeyRef: {name: {{ include "shipway.secretName" . }}, key: redis-url}}
- name: SHIPWAY_RESULT_BACKEND
  valueFrom: {secretKeyRef: {name: {{ include "shipway.secretName" . }}, key: redis-url}}
- name: SHIPWAY_ARCHIVE_KEY
  valueFrom: {secretKeyRef: {name: {{ include "shipway.secretName" . }}, key: archive-key}}
- name: SHIPWAY_WEBHOOK_SECRET
  valueFrom:
    secretKeyRef: {name: {{ include "shipway.secretName" . }}, key: webhook-secret, optional: true}
- name: MLFLOW_TRACKING_USERNAME
  valueFrom:
    secretKeyRef: {name: {{ include "shipway.secretName" . }}, key: mlflow-username, optional: true}
- name: MLFLOW_TRACKING_PASSWORD
  valueFrom:
    secretKeyRef: {name: {{ include "shipway.secretName" . }}, key: mlflow-password, optional: true}
{{- end -}}

{{/* The API's tokens: for the API, which checks them, and the GitOps worker (it applies
specs as the API does). The build workers call no API and get none (worker.yaml). */}}
{{- define "shipway.apiTokensEnv" -}}
- name: SHIPWAY_API_TOKENS
  valueFrom: {secretKeyRef: {name: {{ include "shipway.secretName" . }}, key: api-tokens}}
{{- end -}}

{{/* The GitOps hooks' secrets and the repository URL (which may carry a read-only token):
for the API, which checks deliveries, and the GitOps worker, which fetches and applies
them; never for the build workers, which run the models being built. */}}
{{- define "shipway.gitopsEnv" -}}
{{- /* The GitOps hooks only with gitops.enabled: they need the GitOps worker, the one
whose Role writes ModelDeployments; without it no delivery would ever be applied, so the
hooks stay off (404). */}}
{{- if .Values.gitops.enabled }}
{{- range $key, $variable := dict "github-webhook-secret" "SHIPWAY_GITHUB_WEBHOOK_SECRET" "gitlab-webhook-token" "SHIPWAY_GITLAB_WEBHOOK_TOKEN" "mlflow-webhook-secret" "SHIPWAY_MLFLOW_WEBHOOK_SECRET" "gitops-repository-url" "SHIPWAY_GITOPS_REPOSITORY_URL" }}
- name: {{ $variable }}
  valueFrom:
    secretKeyRef: {name: {{ include "shipway.secretName" $ }}, key: {{ $key }}, optional: true}
{{- end }}
{{- else if or .Values.gitops.repositoryUrl .Values.secrets.githubWebhookSecret .Values.secrets.gitlabWebhookToken .Values.secrets.mlflowWebhookSecret }}
{{- fail "gitops.repositoryUrl and the hooks' secrets (secrets.githubWebhookSecret, gitlabWebhookToken, mlflowWebhookSecret) need gitops.enabled=true: only then is there a GitOps worker (and its Role) to apply pushed specs" }}
{{- end }}
{{- end -}}

{{/* Volumes of a read-only root file system: SHIPWAY_HOME and /tmp as emptyDirs. */}}
{{- define "shipway.scratchVolumes" -}}
- name: home
  emptyDir: {sizeLimit: {{ .sizeLimit }}}
- name: tmp
  emptyDir: {sizeLimit: 1Gi}
{{- end -}}

{{- define "shipway.scratchMounts" -}}
- {name: home, mountPath: /var/lib/shipway}
- {name: tmp, mountPath: /tmp}
{{- end -}}

{{- define "shipway.scheduling" -}}
{{- with .nodeSelector }}
nodeSelector: {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .tolerations }}
tolerations: {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .affinity }}
affinity: {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{/* The state store's SQLAlchemy URL from the postgresql values (psycopg 3). */}}
{{- define "shipway.databaseUrl" -}}
{{- $pg := .Values.postgresql -}}
{{- printf "postgresql+psycopg://%s:%s@%s:%v/%s?sslmode=%s" (urlquery $pg.user) (urlquery $pg.password) $pg.host $pg.port $pg.database $pg.sslmode -}}
{{- end -}}
