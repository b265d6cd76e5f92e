// The Grafana dashboard: one controller's life at a glance. Panels are plain Grafana
// JSON (schema of Grafana 11/12), checked against the dashboard schema of
// grafana-foundation-sdk by the mixin's tests.
local cfg = (import 'config.libsonnet')._config;

local ds = { type: 'prometheus', uid: '${datasource}' };
local sel = 'job=~"$job", instance=~"$instance"';

local query(expr, legend, refId='A', instant=false) = {
  datasource: ds,
  expr: expr,
  legendFormat: legend,
  refId: refId,
  range: !instant,
  instant: instant,
};

local panel(type, title, description, targets, x, y, w, h) = {
  type: type,
  title: title,
  description: description,
  datasource: ds,
  targets: [
    t { refId: std.char(std.codepoint('A') + i) }
    for i in std.range(0, std.length(targets) - 1)
    for t in [targets[i]]
  ],
  gridPos: { x: x, y: y, w: w, h: h },
};

local timeseries(title, description, targets, x, y, w=12, h=8, unit='short', stack=false) =
  panel('timeseries', title, description, targets, x, y, w, h) {
    fieldConfig: {
      defaults: {
        unit: unit,
        custom: {
          drawStyle: 'line',
          lineWidth: 1,
          fillOpacity: if stack then 30 else 10,
          stacking: { mode: if stack then 'normal' else 'none', group: 'A' },
        },
      },
      overrides: [],
    },
    options: {
      legend: { showLegend: true, displayMode: 'list', placement: 'bottom', calcs: [] },
      tooltip: { mode: 'multi', sort: 'desc' },
    },
  };

local bars(title, description, targets, x, y, w=12, h=8) =
  timeseries(title, description, targets, x, y, w, h, stack=true) {
    fieldConfig+: { defaults+: { custom+: { drawStyle: 'bars', fillOpacity: 80 } } },
  };

local stat(title, description, targets, x, y, w=6, h=4, unit='short', mappings=[], thresholds=null) =
  panel('stat', title, description, targets, x, y, w, h) {
    fieldConfig: {
      defaults: {
        unit: unit,
        mappings: mappings,
        [if thresholds != null then 'thresholds']: thresholds,
      },
      overrides: [],
    },
    options: {
      reduceOptions: { values: false, calcs: ['lastNotNull'], fields: '' },
      colorMode: 'value',
      graphMode: 'none',
      textMode: 'value_and_name',
      justifyMode: 'auto',
      orientation: 'auto',
      showPercentChange: false,
      percentChangeColorMode: 'standard',
      wideLayout: true,
    },
  };

local steps(list) = { mode: 'absolute', steps: list };

local row(title, y) = {
  type: 'row',
  title: title,
  collapsed: false,
  gridPos: { x: 0, y: y, w: 24, h: 1 },
  panels: [],
};

local variable(name, label, query) = {
  type: 'query',
  name: name,
  label: label,
  datasource: ds,
  query: query,
  refresh: 2,
  includeAll: true,
  multi: true,
  allValue: '.+',
  sort: 1,
};

{
  grafanaDashboards+:: {
    'jenkins-spot-agent.json': {
      uid: cfg.dashboardUid,
      title: 'Jenkins on Spot (jenkins-spot-agent)',
      description: 'Phase, notices, the shutdown plan, IMDS health, the lease and Jenkins of every controller instance run by jenkins-spot-agent.',
      tags: cfg.dashboardTags,
      editable: true,
      graphTooltip: 1,
      timezone: 'utc',
      refresh: cfg.refresh,
      schemaVersion: 39,
      time: { from: 'now-24h', to: 'now' },
      annotations: {
        list: [
          {
            name: 'Interruption notices',
            enable: true,
            hide: false,
            iconColor: 'red',
            datasource: ds,
            expr: 'changes(jenkins_spot_agent_interruption_notices_total{%s, kind!="drill"}[2m]) > 0' % sel,
            titleFormat: '{{kind}} notice',
            textFormat: '{{instance}}',
          },
        ],
      },
      templating: {
        list: [
          {
            type: 'datasource',
            name: 'datasource',
            label: 'Data source',
            query: 'prometheus',
            refresh: 1,
          },
          variable('job', 'Job', 'label_values(jenkins_spot_agent_build_info, job)'),
          variable('instance', 'Instance', 'label_values(jenkins_spot_agent_build_info{job=~"$job"}, instance)'),
        ],
      },
      panels: std.mapWithIndex(function(i, p) p { id: i + 1 }, [
        row('Now', 0),
        stat('Lease holder', 'The instance holding the lease on JENKINS_HOME: exactly one should show 1.',
             [query('jenkins_spot_agent_lease_held{%s} == 1' % sel, '{{instance}}', instant=true)], 0, 1, 6, 4),
        stat('Successor waiting', '1 while another instance waits ready on the lease (a fast handover is possible).',
             [query('max(jenkins_spot_agent_successor_waiting{%s})' % sel, 'successor waiting', instant=true)], 6, 1, 6, 4,
             mappings=[{ type: 'value', options: { '0': { text: 'none', index: 0 }, '1': { text: 'ready', index: 1, color: 'green' } } }]),
        stat('Running builds', 'Builds running in Jenkins at the last look (regular and Pipeline executors).',
             [query('sum(jenkins_spot_agent_jenkins_running_builds{%s})' % sel, 'running builds', instant=true)], 12, 1, 6, 4),
        stat('IMDS blind for', 'Time since instance metadata last gave a definite answer. Over 30 s the agent may miss a notice.',
             [query('max(time() - (jenkins_spot_agent_imds_last_success_timestamp_seconds{%s} > 0))' % sel, 'IMDS', instant=true)], 18, 1, 6, 4,
             unit='s', thresholds=steps([{ color: 'green', value: null }, { color: 'orange', value: 10 }, { color: 'red', value: 30 }])),
        timeseries('Phase', 'The agent phase over time (1 = current).',
                   [query('jenkins_spot_agent_phase{%s} == 1' % sel, '{{instance}} {{phase}}')], 0, 5, 24, 6) {
          fieldConfig+: { defaults+: { custom+: { drawStyle: 'points', pointSize: 6 } } },
        },

        row('Notices', 11),
        bars('Notices by kind', 'End-of-instance notices per kind (drills included).',
             [query('sum by (kind) (increase(jenkins_spot_agent_interruption_notices_total{%s}[$__rate_interval]))' % sel, '{{kind}}')], 0, 12),
        panel('table', 'Notices by capacity pool (1 day)', 'Notices per instance type and Availability Zone over the last day: a pool that is reclaimed often is a candidate to drop from the group.',
              [query('jenkins_spot_agent:interruption_notices_by_pool:sum1d', '', instant=true) { format: 'table' }], 12, 12, 12, 8) {
          options: { showHeader: true, cellHeight: 'sm', frameIndex: 0, footer: { show: false, reducer: ['sum'], countRows: false } },
          fieldConfig: { defaults: {}, overrides: [] },
          transformations: [{ id: 'organize', options: { excludeByName: { Time: true } } }],
        },

        row('Shutdown plan', 20),
        timeseries('Step duration (p50, p90 over a day)', 'How long each boot and shutdown step takes.',
                   [
                     query('jenkins_spot_agent:step_duration_seconds:p90_1d', 'p90 {{step}}'),
                     query('jenkins_spot_agent:step_duration_seconds:p50_1d', 'p50 {{step}}'),
                   ], 0, 21, unit='s'),
        timeseries('Margin left at the end of the plan', 'Time left before the termination time when the shutdown plan finished; under 10 s warns, negative means it overran.',
                   [query('jenkins_spot_agent_shutdown_margin_seconds{%s}' % sel, '{{instance}}')], 12, 21, unit='s') {
          fieldConfig+: { defaults+: { custom+: { drawStyle: 'points', pointSize: 8 }, thresholds: steps([{ color: 'red', value: null }, { color: 'orange', value: 0 }, { color: 'green', value: 10 }]) } },
        },
        bars('Step failures', 'Steps that ended in an error; the plan goes on past them.',
             [query('sum by (step) (increase(jenkins_spot_agent_step_failures_total{%s}[$__rate_interval])) > 0' % sel, '{{step}}')], 0, 29, 8),
        bars('Builds aborted by the stop', 'Builds the container stop aborted (Pipelines resume and are not counted).',
             [query('sum(increase(jenkins_spot_agent_aborted_builds_total{%s}[$__rate_interval]))' % sel, 'aborted')], 8, 29, 8),
        bars('Replacement requests and heartbeats', 'Requests to the Auto Scaling group for a replacement, and lifecycle heartbeats, by result.',
             [
               query('sum by (result) (increase(jenkins_spot_agent_replacement_requests_total{%s}[$__rate_interval])) > 0' % sel, 'replacement {{result}}'),
               query('sum by (result) (increase(jenkins_spot_agent_lifecycle_heartbeats_total{%s}[$__rate_interval])) > 0' % sel, 'heartbeat {{result}}'),
             ], 16, 29, 8),

        row('Lease and IMDS', 37),
        timeseries('Lease holder and waiting successor', 'Which instance holds the lease, and whether a successor waits ready on it.',
                   [
                     query('jenkins_spot_agent_lease_held{%s}' % sel, 'held by {{instance}}'),
                     query('jenkins_spot_agent_successor_waiting{%s}' % sel, 'successor waiting ({{instance}})'),
                   ], 0, 38),
        timeseries('IMDS requests', 'Instance metadata requests by result: anything but ok and not_found is blindness.',
                   [query('sum by (result) (rate(jenkins_spot_agent_imds_requests_total{%s}[$__rate_interval]))' % sel, '{{result}}')], 12, 38, unit='reqps', stack=true),

        row('Jenkins', 46),
        timeseries('Running builds per instance', 'Builds running at the last look, per instance.',
                   [query('jenkins_spot_agent_jenkins_running_builds{%s}' % sel, '{{instance}}')], 0, 47, 8),
        bars('Jenkins restarts', 'Jenkins started again by the agent after a crash or a dockerd restart.',
             [query('sum by (instance) (increase(jenkins_spot_agent_jenkins_restarts_total{%s}[$__rate_interval])) > 0' % sel, '{{instance}}')], 8, 47, 8),
        bars('Jenkins API failures and webhook', 'Failed Jenkins API calls by call, and webhook notifications by result.',
             [
               query('sum by (call) (increase(jenkins_spot_agent_jenkins_api_failures_total{%s}[$__rate_interval])) > 0' % sel, 'jenkins {{call}}'),
               query('sum by (result) (increase(jenkins_spot_agent_webhook_notifications_total{%s}[$__rate_interval])) > 0' % sel, 'webhook {{result}}'),
             ], 16, 47, 8),
      ]),
    },
  },
}
