# hoststat: the two set-up commands are `make demo` and `make test` (see README.md).
GO      ?= go
PKGS    ?= ./...
BENCHTIME ?= 1s

.PHONY: all build test vet fmt-check bench bench-capacity demo statd-demo fuzz clean

all: build

build:
	# Without cgo: rpc.statd can then drop root on every thread (see docs/operations.md).
	CGO_ENABLED=0 $(GO) build -o bin/ ./cmd/...

## test: install what the tests need when missing, then vet and run every test with the race detector.
test:
	scripts/test-deps
	$(MAKE) fmt-check vet
	$(GO) test -race -count=1 -timeout 14m $(PKGS)

vet:
	$(GO) vet $(PKGS)

fmt-check:
	@out="$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go'))"; \
	if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

## bench: every benchmark, figures as in docs/benchmarks.md.
bench:
	scripts/test-deps
	$(GO) test -run '^$$' -bench . -benchmem -benchtime $(BENCHTIME) $(PKGS)

## bench-capacity: recvstats' capacity as deployed: loadgen playing N nodes at CAPACITY_RATE Hz,
##   the bare receiver and recvstats (background, -d) as separate processes on loopback, alternating,
##   CAPACITY_SECONDS per point. Writes the table into CAPACITY_WRITE (empty: print only).
##   Run it on a quiet machine: every process shares the CPUs. See docs/benchmarks.md.
##   CAPACITY_PERF=DIR also profiles each receiver's window with perf (reports in DIR; CPU figures then not clean).
CAPACITY_N       ?= 10000 50000 100000 150000 200000
CAPACITY_SECONDS ?= 30
CAPACITY_RATE    ?= 1
CAPACITY_REPEAT  ?= 1
CAPACITY_WRITE   ?= docs/benchmarks.md
CAPACITY_PERF    ?=
bench-capacity:
	$(GO) build -o bin/capacity/ ./cmd/recvstats ./internal/capacity/cmd/...
	bin/capacity/benchcapacity --bin bin/capacity --nodes "$(CAPACITY_N)" --rate $(CAPACITY_RATE) \
		--window $(CAPACITY_SECONDS)s --repeat $(CAPACITY_REPEAT) --json bin/capacity/points.json \
		$(if $(CAPACITY_WRITE),--write $(CAPACITY_WRITE)) $(if $(CAPACITY_PERF),--perf $(CAPACITY_PERF)) \
		--command 'make bench-capacity CAPACITY_N="$(CAPACITY_N)" CAPACITY_SECONDS=$(CAPACITY_SECONDS) CAPACITY_RATE=$(CAPACITY_RATE) CAPACITY_REPEAT=$(CAPACITY_REPEAT)'

## fuzz: a short run of every fuzz target (FUZZTIME each).
FUZZTIME ?= 20s
fuzz:
	scripts/fuzz-all $(FUZZTIME)

## demo: a local cluster on loopback, no root, state in ./demo-state.
##   statd-demo: rpc.statd (root) in a private namespace with its admin view.
demo: build
	scripts/demo

clean:
	rm -rf bin demo-state

statd-demo: build
	scripts/statd-demo
