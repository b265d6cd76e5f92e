// Recording rules: the figures the dashboard and the pool alert read over long
// windows, computed once.
{
  prometheusRules+:: {
    groups+: [
      {
        name: 'jenkins-spot-agent.rules',
        rules: [
          // Notices per kind over the last hour, across all controller instances.
          {
            record: 'jenkins_spot_agent:interruption_notices:increase1h',
            expr: 'sum by (job, kind) (increase(jenkins_spot_agent_interruption_notices_total[1h]))',
          },
          // Notices per capacity pool over the last day. Every controller instance is
          // a new series that starts at 1 with its notice, which increase() cannot
          // see: the highest value of each series in the day is summed instead.
          {
            record: 'jenkins_spot_agent:interruption_notices_by_pool:sum1d',
            expr: 'sum by (kind, instance_type, availability_zone) (max_over_time(jenkins_spot_agent_interruption_notices_by_pool_total[1d]))',
          },
          // How long each step takes, 50th and 90th percentile over a day (the
          // shutdown steps run rarely: an hour would mostly be empty).
          {
            record: 'jenkins_spot_agent:step_duration_seconds:p50_1d',
            expr: 'histogram_quantile(0.5, sum by (le, step) (increase(jenkins_spot_agent_step_duration_seconds_bucket[1d])))',
          },
          {
            record: 'jenkins_spot_agent:step_duration_seconds:p90_1d',
            expr: 'histogram_quantile(0.9, sum by (le, step) (increase(jenkins_spot_agent_step_duration_seconds_bucket[1d])))',
          },
          // Seconds since IMDS last gave a definite answer, per agent.
          {
            record: 'jenkins_spot_agent:imds_seconds_since_success',
            expr: 'timestamp(jenkins_spot_agent_imds_last_success_timestamp_seconds) - (jenkins_spot_agent_imds_last_success_timestamp_seconds > 0)',
          },
        ],
      },
    ],
  },
}
