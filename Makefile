# jenkins-spot-agent — build, test, benchmark, package.
SHELL   := /bin/bash
GO      ?= go
BIN     := dist/jenkins-spot-agent
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
COMMIT  ?= $(shell git rev-parse HEAD 2>/dev/null || echo unknown)
LDFLAGS := -s -w -X main.version=$(VERSION) -X main.commit=$(COMMIT)

.PHONY: all build simulate simulate-failover test unit lint check-packaging bench bench-migrate bench-footprint package clean

all: build

## build: the static binary, version and commit stamped
build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags "$(LDFLAGS)" -o $(BIN) ./cmd/jenkins-spot-agent

## simulate: boot, a Spot notice and the shutdown plan against built-in emulators
simulate: build
	$(BIN) simulate

simulate-failover: build
	$(BIN) simulate --failover

## test: formatting, vet, every Go test (Docker, mounts, AEMM, promtool...), packaging checks
test: lint build unit check-packaging

lint:
	@unformatted=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	  if [ -n "$$unformatted" ]; then echo "gofmt would change: $$unformatted"; exit 1; fi
	$(GO) vet ./...

unit:
	JENKINS_SPOT_AGENT_BIN=$(CURDIR)/$(BIN) $(GO) test -race -count=1 -timeout 25m ./...

check-packaging: build
	packaging/check.sh $(BIN)

## bench: the figures recorded in docs/benchmarks.md
bench: build
	JENKINS_SPOT_AGENT_BIN=$(CURDIR)/$(BIN) $(GO) test -run '^$$' -bench . -benchtime 1x -count 1 \
	  ./internal/agent ./internal/imds ./internal/lease ./internal/container ./internal/targets ./internal/jenkins ./internal/simulate ./cmd/jenkins-spot-agent
	@ls -l $(BIN) | awk '{print "binary size: " $$5 " bytes"}'
	$(MAKE) bench-migrate

## bench-migrate: migrate beside cp -a, rsync and parallel cp onto a local disk and EFS-like latency (root, /dev/fuse; about 45 min)
bench-migrate: build
	JENKINS_SPOT_AGENT_BIN=$(CURDIR)/$(BIN) nice $(GO) test -run '^$$' -bench MigrateEFS -benchtime 1x -count 1 -timeout 180m ./internal/migrate

## bench-footprint: CPU and RSS of the watcher over 10 minutes, next to a curl loop
bench-footprint:
	$(GO) test ./internal/imds -run TestFootprint -footprint=10m -v -timeout 30m

## package: .deb and .rpm in dist/
package: build
	packaging/build-packages.sh $(VERSION)

clean:
	rm -rf dist
