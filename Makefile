# hoststat: the two set-up commands are `make demo` and `make test` (see README.md).
GO      ?= go
PKGS    ?= ./...
BENCHTIME ?= 1s

.PHONY: all build test vet fmt-check bench demo statd-demo fuzz clean

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
