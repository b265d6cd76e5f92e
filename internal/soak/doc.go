// Package soak is the randomized fault soak of the two-instance failover. It holds
// tests only.
//
// Each cycle runs two emulated controller instances, A and B, as real processes of the
// static agent binary (`jenkins-spot-agent run`, as systemd starts it, with systemd's
// Restart=on-failure emulated): A serving, B waiting on the lease. The Jenkins
// containers run on a private dockerd that the soak may kill and start again; the EFS
// home is a tmpfs that both instances' mount programs bind at their mount points; IMDS,
// ELBv2/Auto Scaling and Jenkins are the test doubles, with fault proxies in front of
// IMDS and Jenkins. A schedule drawn from a seeded PRNG ends A's tenure (a Spot notice,
// a stop signal, or a SIGKILL that is not followed by a restart) and puts faults at
// random moments around it: agent SIGKILL and restart, a dockerd restart, IMDS dark or
// chaotic, Jenkins hung or answering 503, ELB and Auto Scaling throttling, a torn lease
// record. A sampler reads /proc throughout: two Jenkins processes alive on the home at
// once, or one whose home is not the EFS stand-in, is a violation. After the cycle the
// soak checks that every notice was acted on, every plan was done before its deadline
// minus the safety margin, the fence outlived a killed agent, the successor took over,
// and every agent ended with exit 0 on a stop signal.
//
// Agents run as processes, not goroutines, because a goroutine cannot be SIGKILLed: a
// cancelled agent still finishes a shutdown plan under way (its steps outlive the
// caller's cancellation on purpose) and its container's guard is never left alone, so
// a cancellation is no model of a kill.
//
//	make soak                                  # SOAK_CYCLES=200, a random seed
//	make soak SOAK_SEED=1234 SOAK_CYCLES=1     # cycle n of seed S is SOAK_SEED=S+n
//
// `go test ./internal/soak` (CI) runs three cycles; -short skips them.
package soak
