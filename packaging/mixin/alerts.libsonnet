// Alert rules. Each description says what happened and what to do next.
{
  prometheusAlerts+:: {
    groups+: [
      {
        name: 'jenkins-spot-agent',
        rules: [
          // A drill is a deliberate game day and is left out. Counters start at 0 for
          // every kind, so increase() sees the very first notice.
          {
            alert: 'JenkinsSpotInterruptionNotice',
            expr: |||
              sum by (job, instance, kind) (
                increase(jenkins_spot_agent_interruption_notices_total{kind!="drill"}[5m])
              ) > 0
            |||,
            labels: { severity: 'warning' },
            annotations: {
              summary: '{{ $labels.instance }} received a {{ $labels.kind }} notice',
              description: 'The agent on {{ $labels.instance }} saw a {{ $labels.kind }} notice and, for a termination, is running the shutdown plan. Watch the replacement instance take the lease and Jenkins answer; if it has not within 10 minutes, check the Auto Scaling group activity and `journalctl -u jenkins-spot-agent` on the new instance.',
            },
          },
          // Measured at scrape time (timestamp() of the sample), so a long scrape
          // interval does not make a healthy agent look blind. Before the first good
          // poll the process start time stands in, so an agent blind since boot is
          // caught too. A stopped agent (plan finished) no longer needs to see notices.
          {
            alert: 'JenkinsSpotIMDSBlind',
            expr: |||
              (
                timestamp(jenkins_spot_agent_imds_last_success_timestamp_seconds)
                - (
                    jenkins_spot_agent_imds_last_success_timestamp_seconds > 0
                    or on (job, instance) process_start_time_seconds
                  )
              ) > %(imdsBlindSeconds)d
              unless on (job, instance) jenkins_spot_agent_phase{phase="stopped"} == 1
            ||| % $._config,
            labels: { severity: 'critical' },
            annotations: {
              summary: 'jenkins-spot-agent on {{ $labels.instance }} cannot read instance metadata',
              description: "No definite answer from IMDS for {{ $value | humanizeDuration }}: the agent would miss a Spot interruption notice. Check that the instance's metadata options allow IMDSv2 with a hop limit the agent can reach, and see the blind streak and last error in `jenkins-spot-agent status`.",
            },
          },
          // Absent until a plan has finished, so no plan means no alert.
          {
            alert: 'JenkinsSpotShutdownMarginLow',
            expr: 'jenkins_spot_agent_shutdown_margin_seconds < %(marginLowSeconds)d' % $._config,
            labels: { severity: 'warning' },
            annotations: {
              summary: 'Shutdown plan on {{ $labels.instance }} finished {{ $value | humanizeDuration }} before termination',
              description: 'The plan finished with under %(marginLowSeconds)d s to spare, or after the termination time when negative. Find the slow step in jenkins_spot_agent_step_duration_seconds, then raise interruption.safety_margin or lower jenkins.stop_grace.' % $._config,
            },
          },
          {
            alert: 'JenkinsSpotStepFailed',
            expr: 'increase(jenkins_spot_agent_step_failures_total[10m]) > 0',
            labels: { severity: 'warning' },
            annotations: {
              summary: 'Step {{ $labels.step }} failed on {{ $labels.instance }}',
              description: 'A failed step is skipped and the plan goes on, so this may have left a target registered, a lease held or a lifecycle action open. Read `journalctl -u jenkins-spot-agent` for the error and run `jenkins-spot-agent preflight` on a running controller to find missing permissions or an unreachable service.',
            },
          },
          // The lease went from held to not held with no notice, signal or drill in
          // the window: it was not released on purpose. The 1m wait covers an agent
          // restart, which adopts its own lease again within seconds.
          {
            alert: 'JenkinsSpotLeaseLost',
            expr: |||
              (
                jenkins_spot_agent_lease_held == 0
                and on (job, instance) max_over_time(jenkins_spot_agent_lease_held[10m]) == 1
              )
              unless on (job, instance)
                sum by (job, instance) (increase(jenkins_spot_agent_interruption_notices_total[15m])) > 0
            |||,
            'for': '1m',
            labels: { severity: 'critical' },
            annotations: {
              summary: 'jenkins-spot-agent on {{ $labels.instance }} lost the lease on JENKINS_HOME',
              description: 'The agent could not renew its lease (EFS slow or unreachable) or another instance took it, and it stops Jenkins before the lease lapses. Check the EFS mount and its mount targets, and run `jenkins-spot-agent status` on every controller instance to make sure exactly one holds the lease.',
            },
          },
          {
            alert: 'JenkinsSpotServingWithoutLease',
            expr: |||
              jenkins_spot_agent_lease_held == 0
              and on (job, instance) jenkins_spot_agent_phase{phase="serving"} == 1
            |||,
            'for': '30s',
            labels: { severity: 'critical' },
            annotations: {
              summary: 'Jenkins on {{ $labels.instance }} is serving without the lease',
              description: 'Two controllers may be writing JENKINS_HOME. Unless `jenkins-spot-agent status` on this instance shows it as the holder, stop it now with `systemctl stop jenkins-spot-agent`.',
            },
          },
          // Crashes are restarted with backoff; a loop means Jenkins cannot stay up.
          {
            alert: 'JenkinsSpotJenkinsRestarting',
            expr: 'increase(jenkins_spot_agent_jenkins_restarts_total[15m]) >= %(restartLoopCount)d' % $._config,
            labels: { severity: 'warning' },
            annotations: {
              summary: 'Jenkins on {{ $labels.instance }} restarted {{ $value }} times in 15 minutes',
              description: 'The agent keeps starting the Jenkins container again after it stops. Read `docker logs jenkins` and `journalctl -u jenkins-spot-agent` on the instance: out of memory (JAVA_OPTS), a broken plugin, or a full disk are usual causes.',
            },
          },
          // While draining, an executor list that cannot be read is "unknown": the
          // plan then waits until the stop time instead of handing over early.
          {
            alert: 'JenkinsSpotJenkinsAPIFailing',
            expr: 'increase(jenkins_spot_agent_jenkins_api_failures_total[10m]) > 2',
            labels: { severity: 'warning' },
            annotations: {
              summary: 'The agent on {{ $labels.instance }} cannot call Jenkins ({{ $labels.call }})',
              description: "Calls to the Jenkins API fail: quiet-down or the list of running builds may not work during a shutdown. Run `jenkins-spot-agent preflight` and check jenkins.user's API token and its Overall/Manage permission.",
            },
          },
          {
            alert: 'JenkinsSpotReplacementRequestFailed',
            expr: 'increase(jenkins_spot_agent_replacement_requests_total{result="failed"}[10m]) > 0',
            labels: { severity: 'warning' },
            annotations: {
              summary: 'The agent on {{ $labels.instance }} could not ask its Auto Scaling group for a replacement',
              description: 'The replacement launches only after this instance is gone, so Jenkins is down longer. Run `jenkins-spot-agent preflight` for the missing Auto Scaling permission, and check the group activity history.',
            },
          },
          {
            alert: 'JenkinsSpotLifecycleHeartbeatFailing',
            expr: 'increase(jenkins_spot_agent_lifecycle_heartbeats_total{result="failed"}[10m]) > 0',
            labels: { severity: 'warning' },
            annotations: {
              summary: 'Lifecycle heartbeats fail on {{ $labels.instance }}',
              description: 'The termination lifecycle hook may time out before running builds finish. Check autoscaling:RecordLifecycleActionHeartbeat in the instance role (`jenkins-spot-agent preflight`).',
            },
          },
          // Each controller instance has its own series, born at 1 with its notice:
          // the recording rule counts them per capacity pool over a day.
          {
            alert: 'JenkinsSpotPoolInterruptedOften',
            expr: 'jenkins_spot_agent:interruption_notices_by_pool:sum1d{kind="spot_terminate"} >= %(poolInterruptionsPerDay)d' % $._config,
            labels: { severity: 'info' },
            annotations: {
              summary: '{{ $labels.instance_type }} in {{ $labels.availability_zone }} was reclaimed {{ $value }} times in a day',
              description: "This capacity pool is short of Spot capacity. Consider dropping {{ $labels.instance_type }} from the Auto Scaling group's instance types, or adding other types of the same size.",
            },
          },
          {
            alert: 'JenkinsSpotWebhookFailing',
            expr: 'increase(jenkins_spot_agent_webhook_notifications_total{result=~"failed|dropped"}[30m]) > 0',
            labels: { severity: 'info' },
            annotations: {
              summary: 'Webhook notifications from {{ $labels.instance }} are {{ $labels.result }}',
              description: 'Notices and plan reports do not reach the chat channel. Check the webhook URL (webhook.url_file or the webhook-url credential) and the route from the instance to it; the agent logs each failure without the URL.',
            },
          },
          // During an interruption the old target stays in EC2 service discovery for
          // a while; restrict discovery to running instances, the wait covers the rest.
          {
            alert: 'JenkinsSpotAgentDown',
            expr: 'up{%(agentSelector)s} == 0' % $._config,
            'for': $._config.agentDownFor,
            labels: { severity: 'critical' },
            annotations: {
              summary: 'jenkins-spot-agent on {{ $labels.instance }} does not answer scrapes',
              description: 'Nothing watches this controller for interruptions. On the instance run `systemctl status jenkins-spot-agent` and `journalctl -u jenkins-spot-agent`; if the instance is gone, filter service discovery on instance-state-name=running.',
            },
          },
          {
            alert: 'JenkinsSpotAgentAbsent',
            expr: 'absent(up{%(agentSelector)s})' % $._config,
            'for': '10m',
            labels: { severity: 'critical' },
            annotations: {
              summary: 'No jenkins-spot-agent target is being scraped',
              description: "No controller instance is discovered: the Auto Scaling group may have no running instance, or the scrape job lost it. Check the group's activity history and the scrape configuration.",
            },
          },
        ],
      },
    ],
  },
}
