# jenkins-spot-agent — build, test, benchmark, package.
SHELL   := /bin/bash
GO      ?= go
BIN     := dist/jenkins-spot-agent
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
COMMIT  ?= $(shell git rev-parse HEAD 2>/dev/null || echo unknown)
LDFLAGS := -s -w -X main.version=$(VERSION) -X main.commit=$(COMMIT)

.PHONY: all build simulate simulate-single simulate-compare test check fuzz unit lint check-packaging bench bench-size bench-migrate bench-footprint package clean mixin peers soak

# The shell scripts that shellcheck reads: every script with a sh/bash shebang under
# packaging/ and .ci/.
SHELL_SCRIPTS = $(shell git ls-files packaging .ci 2>/dev/null | xargs grep -lE '^\#!.*(/|env )(ba|da)?sh\b' 2>/dev/null)
# How long `make fuzz` runs each fuzz target.
FUZZTIME ?= 5s
# `make soak`: how many cycles, and the seed (empty: a random one, printed). Cycle n
# draws its schedule from SOAK_SEED+n, so SOAK_SEED=S+n SOAK_CYCLES=1 draws it again.
SOAK_CYCLES ?= 200
SOAK_SEED ?=

all: build

## build: the static binary, version and commit stamped
build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags "$(LDFLAGS)" -o $(BIN) ./cmd/jenkins-spot-agent

## simulate: a Spot interruption rehearsed against built-in emulators: boot, the notice,
## the replacement asked for at once, the handover to it, downtime through the load balancer
simulate: build
	$(BIN) simulate --failover

## simulate-single: one instance: boot, a Spot notice and the shutdown plan
simulate-single: build
	$(BIN) simulate

## simulate-compare: the replacement at the notice beside the replacement after termination
simulate-compare: build
	$(BIN) simulate --failover --compare

## test: the gates, every Go test (Docker, mounts, AEMM, promtool...), packaging checks
test: lint build unit check-packaging

## check: the quick loop: every Go test that needs no peer and takes at most seconds
check:
	$(GO) test -short -count=1 -parallel 8 ./...

## fuzz: every fuzz target of the module for FUZZTIME each (make fuzz FUZZTIME=1m)
fuzz:
	@set -eo pipefail; $(GO) test -list '^Fuzz' ./... | awk '/^Fuzz/ { t[n++] = $$1; next } /^ok/ { for (i = 0; i < n; i++) print $$2, t[i]; n = 0 }' | \
	  while read -r pkg target; do \
	    echo "fuzz: $$pkg $$target ($(FUZZTIME))"; \
	    $(GO) test -run '^$$' -fuzz "^$$target\$$" -fuzztime $(FUZZTIME) "$$pkg" </dev/null; \
	  done

## lint: gofmt, go.mod tidy, go vet, golangci-lint (.golangci.yml, pinned in tools/go.mod), shellcheck
lint:
	@unformatted=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	  if [ -n "$$unformatted" ]; then echo "gofmt would change: $$unformatted"; exit 1; fi
	$(GO) mod tidy -diff
	$(GO) vet ./...
	cd tools && $(GO) mod tidy -diff
	$(GO) tool -modfile=tools/go.mod golangci-lint run ./...
	shellcheck -x $(SHELL_SCRIPTS)

unit:
	JENKINS_SPOT_AGENT_BIN=$(CURDIR)/$(BIN) $(GO) test -race -count=1 -parallel 4 -timeout 25m ./...

check-packaging: build
	packaging/check.sh $(BIN)

## soak: the randomized fault soak of the failover (needs root and dockerd); report in dist/soak-report.md,
##   `touch dist/soak.stop` ends it after the cycle under way
soak: build
	rm -f dist/soak.stop
	SOAK_CYCLES=$(SOAK_CYCLES) SOAK_SEED=$(SOAK_SEED) SOAK_REPORT=$(CURDIR)/dist/soak-report.md SOAK_VERSION=$(VERSION) \
	  SOAK_STOP=$(CURDIR)/dist/soak.stop \
	  JENKINS_SPOT_AGENT_BIN=$(CURDIR)/$(BIN) $(GO) test -run '^TestSoak$$' -count=1 -v \
	  -timeout $$(( $(SOAK_CYCLES) * 5 + 10 ))m ./internal/soak

## bench: the figures recorded in docs/benchmarks.md
bench: build
	JENKINS_SPOT_AGENT_BIN=$(CURDIR)/$(BIN) $(GO) test -run '^$$' -bench . -benchtime 1x -count 1 \
	  ./internal/agent ./internal/imds ./internal/lease ./internal/container ./internal/targets ./internal/jenkins ./internal/simulate ./cmd/jenkins-spot-agent
	@ls -l $(BIN) | awk '{print "binary size: " $$5 " bytes"}'
	@# RSS of a real `run` serving against the emulators (the end-to-end test; needs root and Docker).
	@out=$$(JENKINS_SPOT_AGENT_BIN=$(CURDIR)/$(BIN) $(GO) test ./cmd/jenkins-spot-agent -run '^TestRunEndToEnd$$' -count=1 -v 2>&1) || { echo "$$out" | tail -40; exit 1; }; \
	  echo "$$out" | grep -E 'agent footprint|--- SKIP|e2e_test.go:[0-9]+: .*needs' | sed 's/^ *//'

## bench-size: the 30 largest symbols of the binary (what takes the space)
bench-size:
	CGO_ENABLED=0 $(GO) build -trimpath -o dist/jenkins-spot-agent.syms ./cmd/jenkins-spot-agent
	$(GO) tool nm -size -sort size dist/jenkins-spot-agent.syms | awk '$$3 !~ /[bB]/ && $$2 < 16777216' | head -30
	@rm -f dist/jenkins-spot-agent.syms

## bench-migrate: migrate beside cp -a, rsync and parallel cp onto a local disk and EFS-like latency (root, /dev/fuse; about 45 min)
bench-migrate: build
	JENKINS_SPOT_AGENT_BIN=$(CURDIR)/$(BIN) nice $(GO) test -run '^$$' -bench MigrateEFS -benchtime 1x -count 1 -timeout 180m ./internal/migrate

## bench-footprint: CPU and RSS of the watcher over 10 minutes, next to a curl loop
bench-footprint:
	$(GO) test ./internal/imds -run TestFootprint -footprint=10m -v -timeout 30m

## peers: install and start the real peers of the tests (Docker, promtool, lintian...), as CI does
peers:
	.ci/peers

## mixin: render the monitoring mixin (packaging/mixin) into alerts.yml, rules.yml, dashboards/
mixin:
	$(GO) run ./packaging/mixin

## package: .deb and .rpm in dist/
package: build
	packaging/build-packages.sh $(VERSION)

clean:
	rm -rf dist
