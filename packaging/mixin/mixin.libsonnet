// The jenkins-spot-agent monitoring mixin: alert rules, recording rules and a Grafana
// dashboard for the agent's metrics, in the shape of the Prometheus monitoring mixins.
// `make mixin` renders it into packaging/alerts.yml, packaging/rules.yml and
// packaging/dashboards/jenkins-spot-agent.json.
(import 'config.libsonnet') +
(import 'alerts.libsonnet') +
(import 'rules.libsonnet') +
(import 'dashboards.libsonnet')
