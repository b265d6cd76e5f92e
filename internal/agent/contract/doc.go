// Package contract holds the contracts of the agent's interfaces (internal/agent's
// deps.go): for each, the method set as the agent uses it, what every method blocks on,
// whether it is idempotent and what its errors mean, and one test suite that every
// implementation must pass: the real adapter (against its real peer where one runs
// here), its test double, and the agent's own fakes. An implementation that passes
// behaves, as far as the agent can tell, like the others.
//
// The suites and who runs them:
//
//	TestMetadata  imds.Client against amazon-ec2-metadata-mock and imdstest; the fake
//	TestMounter   efs.Mounter in a private mount namespace (tmpfs, FUSE); efstest.Dir; the fake
//	TestLease     lease.Lease on a local directory; the fake
//	TestRuntime   container.Runtime on Docker Engine (and a dockerd it restarts); containertest; the fake
//	TestJenkins   jenkins.Client against jenkinstest, in process and as a program; the fake
//	TestTargets   targets.Client against awstest; the fake
//
// Each suite takes a harness that builds a fresh world per case: the implementation
// and the handles the suite needs to steer and observe what is behind it. A harness
// that cannot do something (take a daemon down, hang a file system) leaves that handle
// nil and the case that needs it is skipped. The package imports neither the agent nor
// any AWS or Docker package (of the adapters, only internal/jenkins, for its Build
// type): harnesses bring what is adapter-specific.
package contract
