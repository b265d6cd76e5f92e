// Settings of the jenkins-spot-agent mixin. Override them when importing:
//   (import 'mixin.libsonnet') + { _config+:: { agentSelector: 'job="jsa"' } }
{
  _config+:: {
    // Selects the agent's scrape job in the rules that look at `up`.
    agentSelector: 'job="jenkins-spot-agent"',
    // How long a target may fail scrapes before JenkinsSpotAgentDown fires; covers
    // the old instance lingering in service discovery during an interruption.
    agentDownFor: '5m',
    // IMDS silence, in seconds, that counts as blind (the watcher polls every 1 s).
    imdsBlindSeconds: 30,
    // A finished plan with less time than this to spare warns.
    marginLowSeconds: 10,
    // Jenkins restarts in 15 minutes that make a crash loop.
    restartLoopCount: 3,
    // Spot terminations of one capacity pool (instance type in a zone) in a day that
    // suggest dropping that instance type from the group.
    poolInterruptionsPerDay: 3,
    // Dashboard settings.
    dashboardUid: 'jenkins-spot-agent',
    dashboardTags: ['jenkins', 'spot', 'jenkins-spot-agent'],
    refresh: '30s',
  },
}
