package simulate

import (
	"context"
	"errors"
	"io"
	"sync"
	"time"

	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/agent"
	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/jenkins/jenkinstest"
)

// processRuntime stands in for the Docker container when no Docker Engine is reachable:
// it runs the Jenkins test double in this process, with the same flags the container
// would get. Stop ends it the way SIGTERM ends Jenkins (Pipelines saved into the home);
// Kill does the same at once, as an in-process stand-in cannot lose its memory.
type processRuntime struct {
	args []string

	mu   sync.Mutex
	run  *processRun
	runs int
}

type processRun struct {
	cancel context.CancelFunc
	done   chan struct{}
	code   int64
}

var _ agent.Runtime = (*processRuntime)(nil)

func newProcessRuntime(args []string) *processRuntime {
	return &processRuntime{args: args}
}

func (p *processRuntime) Prepare(context.Context) error { return nil }

func (p *processRuntime) Start(context.Context) (bool, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.run != nil {
		select {
		case <-p.run.done:
		default:
			return true, nil
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &processRun{cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(r.done)
		r.code = int64(jenkinstest.Main(ctx, p.args, io.Discard, io.Discard))
	}()
	p.run = r
	p.runs++
	return false, nil
}

func (p *processRuntime) current() *processRun {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.run
}

func (p *processRuntime) Stop(ctx context.Context, _ time.Duration) error {
	r := p.current()
	if r == nil {
		return nil
	}
	r.cancel()
	select {
	case <-r.done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (p *processRuntime) Kill(ctx context.Context) error { return p.Stop(ctx, 0) }

func (p *processRuntime) Running(context.Context) (bool, error) {
	r := p.current()
	if r == nil {
		return false, nil
	}
	select {
	case <-r.done:
		return false, nil
	default:
		return true, nil
	}
}

func (p *processRuntime) Wait(ctx context.Context) (int64, error) {
	r := p.current()
	if r == nil {
		return 0, errors.New("jenkins stand-in not started")
	}
	select {
	case <-r.done:
		return r.code, nil
	case <-ctx.Done():
		return 0, ctx.Err()
	}
}
