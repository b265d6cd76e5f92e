package imdstest

import (
	"io"
	"log"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"time"
)

// Fault is what the proxy does to one request instead of (or before) forwarding it.
// The zero Fault forwards the request untouched, which lets a schedule interleave
// good answers with bad ones.
type Fault struct {
	// Delay holds the answer back this long (or until the client gives up), then the
	// request is handled as the other fields say.
	Delay time.Duration
	// Status answers this status (401 revoked token, 429, 500...) without forwarding.
	Status int
	// Drop closes the connection without any answer.
	Drop bool
	// Body answers 200 with this body without forwarding: a garbage answer.
	Body []byte
}

// FaultProxy is a reverse proxy in front of any IMDS (the emulator or
// amazon-ec2-metadata-mock) that injects faults on chosen paths. Safe for concurrent
// use.
type FaultProxy struct {
	srv    *http.Server
	url    string
	proxy  *httputil.ReverseProxy
	closed chan struct{}

	mu        sync.Mutex
	standing  map[string]Fault   // path prefix -> fault applied to every request
	scheduled map[string][]Fault // path prefix -> faults applied to the next requests, in order
	requests  map[string]int     // path -> requests seen
	injected  int
	chances   map[string][]Chance // path prefix -> random faults
	rng       *rand.Rand
}

// Chance is a fault met by a share of requests, at random.
type Chance struct {
	// Rate is the probability, 0 to 1, that one request meets Fault.
	Rate  float64
	Fault Fault
}

// NewFaultProxy starts a proxy on 127.0.0.1 that forwards to upstream (a base URL).
// It panics if upstream does not parse or loopback cannot be listened on.
func NewFaultProxy(upstream string) *FaultProxy {
	target, err := url.Parse(upstream)
	if err != nil {
		panic("imdstest: upstream " + upstream + ": " + err.Error())
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic("imdstest: listen on 127.0.0.1: " + err.Error())
	}
	p := &FaultProxy{
		url:       "http://" + ln.Addr().String(),
		closed:    make(chan struct{}),
		standing:  map[string]Fault{},
		scheduled: map[string][]Fault{},
		requests:  map[string]int{},
		chances:   map[string][]Chance{},
	}
	p.proxy = &httputil.ReverseProxy{
		// Rewrite (unlike Director) adds no X-Forwarded-For, which IMDS would refuse
		// on token requests: the proxy stands for a faulty network, not a forwarder.
		Rewrite: func(r *httputil.ProxyRequest) {
			r.SetURL(target)
			r.Out.Host = target.Host
		},
		// An unreachable upstream answers 502, which is the fault a test wants to see,
		// not a line on stderr.
		ErrorLog: log.New(io.Discard, "", 0),
	}
	p.srv = &http.Server{Handler: http.HandlerFunc(p.serve), ReadHeaderTimeout: 5 * time.Second}
	go p.srv.Serve(ln) //nolint:errcheck // Serve returns ErrServerClosed on Close.
	return p
}

// URL is the base URL to give the client as its endpoint.
func (p *FaultProxy) URL() string { return p.url }

// Close stops the proxy; requests held by a Delay end at once.
func (p *FaultProxy) Close() {
	close(p.closed)
	p.srv.Close()
}

// SetFault applies f to every request whose path starts with pathPrefix until
// ClearFaults. A scheduled fault on the same prefix goes first.
func (p *FaultProxy) SetFault(pathPrefix string, f Fault) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.standing[pathPrefix] = f
}

// Schedule applies faults, one per request, in order, to the next requests whose path
// starts with pathPrefix; after them requests pass (or meet the standing fault).
func (p *FaultProxy) Schedule(pathPrefix string, faults ...Fault) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.scheduled[pathPrefix] = append(p.scheduled[pathPrefix], faults...)
}

// SetChances makes requests whose path starts with pathPrefix meet faults at random:
// each request meets at most one, the i-th with probability chances[i].Rate (the rates
// add up to at most 1). The draws come from a generator seeded with seed, so a run that
// sends the same requests in the same order meets the same faults. Scheduled and
// standing faults go first. It replaces earlier chances on the same prefix.
func (p *FaultProxy) SetChances(pathPrefix string, seed uint64, chances ...Chance) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.chances[pathPrefix] = append([]Chance(nil), chances...)
	p.rng = rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
}

// ClearFaults removes standing, scheduled and random faults.
func (p *FaultProxy) ClearFaults() {
	p.mu.Lock()
	defer p.mu.Unlock()
	clear(p.standing)
	clear(p.scheduled)
	clear(p.chances)
}

// Pending is the number of scheduled faults not yet applied.
func (p *FaultProxy) Pending() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for _, fs := range p.scheduled {
		n += len(fs)
	}
	return n
}

// Requests is the number of requests seen whose path starts with pathPrefix.
func (p *FaultProxy) Requests(pathPrefix string) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for path, c := range p.requests {
		if strings.HasPrefix(path, pathPrefix) {
			n += c
		}
	}
	return n
}

// Injected is the number of requests that met a non-zero fault.
func (p *FaultProxy) Injected() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.injected
}

// next picks the fault for a request: the longest matching prefix with a schedule,
// else the longest matching standing fault.
func (p *FaultProxy) next(path string) Fault {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.requests[path]++
	best := ""
	for prefix, fs := range p.scheduled {
		if len(fs) > 0 && strings.HasPrefix(path, prefix) && len(prefix) >= len(best) {
			best = prefix
		}
	}
	var f Fault
	if fs := p.scheduled[best]; len(fs) > 0 && strings.HasPrefix(path, best) {
		f, p.scheduled[best] = fs[0], fs[1:]
	} else {
		best = ""
		for prefix, sf := range p.standing {
			if strings.HasPrefix(path, prefix) && len(prefix) >= len(best) {
				best, f = prefix, sf
			}
		}
		if best == "" {
			f = p.drawLocked(path)
		}
	}
	if f.Delay > 0 || f.Status != 0 || f.Drop || f.Body != nil {
		p.injected++
	}
	return f
}

// drawLocked picks a random fault for path from the longest matching prefix with
// chances; the zero Fault when none applies. p.mu is held.
func (p *FaultProxy) drawLocked(path string) Fault {
	best, found := "", false
	for prefix := range p.chances {
		if strings.HasPrefix(path, prefix) && len(prefix) >= len(best) {
			best, found = prefix, true
		}
	}
	if !found || p.rng == nil {
		return Fault{}
	}
	x := p.rng.Float64()
	for _, c := range p.chances[best] {
		if x < c.Rate {
			return c.Fault
		}
		x -= c.Rate
	}
	return Fault{}
}

func (p *FaultProxy) serve(w http.ResponseWriter, r *http.Request) {
	f := p.next(r.URL.Path)
	if f.Delay > 0 {
		t := time.NewTimer(f.Delay)
		select {
		case <-t.C:
		case <-r.Context().Done():
			t.Stop()
			return
		case <-p.closed:
			t.Stop()
			return
		}
	}
	switch {
	case f.Drop:
		if hj, ok := w.(http.Hijacker); ok {
			if conn, _, err := hj.Hijack(); err == nil {
				conn.Close()
				return
			}
		}
		panic(http.ErrAbortHandler) // closes the connection without an answer
	case f.Status != 0:
		http.Error(w, http.StatusText(f.Status), f.Status)
	case f.Body != nil:
		w.Header().Set("Content-Type", "text/plain")
		w.Write(f.Body) //nolint:errcheck // the client went away; nothing to do.
	default:
		p.proxy.ServeHTTP(w, r)
	}
}
