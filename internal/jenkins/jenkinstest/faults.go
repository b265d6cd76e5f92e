package jenkinstest

import (
	"fmt"
	"net/http"
	"strconv"
	"strings"
)

// FaultKind is what a faulty answer looks like.
type FaultKind string

// Fault kinds.
const (
	// Fault500 answers 500 with Jenkins' error page, as an exception in a plugin does.
	Fault500 FaultKind = "500"
	// Fault401 answers 401, as Jenkins does for a token revoked or rotated meanwhile.
	Fault401 FaultKind = "401"
	// Fault503 answers 503, as a restarting Jenkins does.
	Fault503 FaultKind = "503"
	// FaultGarbage answers 200 with a body that is not the JSON asked for (a proxy's
	// or a login page's HTML).
	FaultGarbage FaultKind = "garbage"
	// FaultHang accepts the request and never answers, until the client gives up or
	// the double stops: a frozen JVM (long GC, an EFS that stopped answering). On
	// every path ("*") it is a hung controller; on one path, a timeout of that call.
	FaultHang FaultKind = "hang"
)

// Fault makes requests to Path answer like Kind, for Times requests (0: until
// ClearFaults). Faults take effect before anything else, even loading.
type Fault struct {
	// Path is the request path, e.g. /computer/api/json; "*" is every path.
	Path  string
	Kind  FaultKind
	Times int
}

// String is the --fault flag form, PATH=KIND[xTIMES].
func (f Fault) String() string {
	s := f.Path + "=" + string(f.Kind)
	if f.Times > 0 {
		s += "x" + strconv.Itoa(f.Times)
	}
	return s
}

// ParseFault reads the --fault flag form, PATH=KIND[xTIMES], e.g.
// /computer/api/json=500x3 or *=hang.
func ParseFault(v string) (Fault, error) {
	path, spec, ok := strings.Cut(v, "=")
	if !ok || (path != "*" && !strings.HasPrefix(path, "/")) {
		return Fault{}, fmt.Errorf("want PATH=KIND[xTIMES] with PATH starting with / or *, got %q", v)
	}
	kind, times, hasTimes := strings.Cut(spec, "x")
	f := Fault{Path: path, Kind: FaultKind(kind)}
	switch f.Kind {
	case Fault500, Fault401, Fault503, FaultGarbage, FaultHang:
	default:
		return Fault{}, fmt.Errorf("fault %q: kind %q is none of 500, 401, 503, garbage, hang", v, kind)
	}
	if hasTimes {
		n, err := strconv.Atoi(times)
		if err != nil || n <= 0 {
			return Fault{}, fmt.Errorf("fault %q: want a positive count after x, got %q", v, times)
		}
		f.Times = n
	}
	return f, nil
}

// InjectFault adds f; the faults are tried in the order they were added.
func (s *Server) InjectFault(f Fault) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faults = append(s.faults, &f)
}

// ClearFaults removes every fault.
func (s *Server) ClearFaults() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faults = nil
}

// takeFault returns the fault for a request to path, counting it, or false.
func (s *Server) takeFault(path string) (Fault, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i, f := range s.faults {
		if f.Path != "*" && f.Path != path {
			continue
		}
		got := *f
		if f.Times > 0 {
			f.Times--
			if f.Times == 0 {
				s.faults = append(s.faults[:i:i], s.faults[i+1:]...)
			}
		}
		return got, true
	}
	return Fault{}, false
}

// answerFault answers r like f.
func (s *Server) answerFault(w http.ResponseWriter, r *http.Request, f Fault) {
	switch f.Kind {
	case Fault500:
		httpError(w, http.StatusInternalServerError, "Server Error")
	case Fault401:
		w.Header().Set("WWW-Authenticate", `Basic realm="Jenkins"`)
		httpError(w, http.StatusUnauthorized, "Invalid password/token for user")
	case Fault503:
		w.Header().Set("Retry-After", "1")
		httpError(w, http.StatusServiceUnavailable, "Service Unavailable")
	case FaultGarbage:
		w.Header().Set("Content-Type", "text/html;charset=utf-8")
		fmt.Fprint(w, "<html><body>502 Bad Gateway</body></html>")
	case FaultHang:
		select {
		case <-r.Context().Done():
		case <-s.stopping:
		}
	}
}
