# hoststat: the two set-up commands are `make demo` and `make test` (see README.md).
GO      ?= go
PKGS    ?= ./...
BENCHTIME ?= 1s
VERSION := $(shell scripts/version)
LDFLAGS := -X github.com/hoststat/hoststat/internal/daemon.version=$(VERSION) $(EXTRA_LDFLAGS)

# make install: PREFIX and DESTDIR as usual; daemons to sbin, readers to bin.
PREFIX     ?= /usr/local
DESTDIR    ?=
SBINDIR    ?= $(PREFIX)/sbin
BINDIR     ?= $(PREFIX)/bin
MANDIR     ?= $(PREFIX)/share/man
DOCDIR     ?= $(PREFIX)/share/doc/hoststat
BASHCOMPDIR ?= $(PREFIX)/share/bash-completion/completions
UNITDIR    ?= $(PREFIX)/lib/systemd/system
TMPFILESDIR ?= $(PREFIX)/lib/tmpfiles.d
SYSCONFDIR ?= $(if $(filter /usr,$(PREFIX)),/etc,$(PREFIX)/etc)
ARCH       ?= $(shell $(GO) env GOARCH)

.PHONY: all build docs install deb deb-check test vet fmt-check bench bench-capacity demo statd-demo fuzz clean

all: build

# Without cgo: rpc.statd can then drop root on every thread (see docs/operations.md).
build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags "$(LDFLAGS)" -o bin/ ./cmd/...

## docs: manual pages, bash completions and the default hoststat.conf, made from the commands' flags.
docs: build
	scripts/gen-docs bin build/docs

## install: binaries, manual pages, completions, systemd units, tmpfiles, the
##   HA examples (docs/ha.md), and hoststat.conf unless one is there (an admin's edits are never overwritten).
install: docs
	install -d $(DESTDIR)$(SBINDIR) $(DESTDIR)$(BINDIR) $(DESTDIR)$(MANDIR)/man1 $(DESTDIR)$(MANDIR)/man5 \
		$(DESTDIR)$(MANDIR)/man8 $(DESTDIR)$(BASHCOMPDIR) $(DESTDIR)$(UNITDIR) $(DESTDIR)$(TMPFILESDIR) $(DESTDIR)$(SYSCONFDIR)
	install -m 0755 bin/recvstats bin/sendstats bin/statdctl $(DESTDIR)$(SBINDIR)/
	install -m 0755 bin/rpc.statd $(DESTDIR)$(SBINDIR)/hoststat-statd
	install -m 0755 bin/beostat bin/beostatus $(DESTDIR)$(BINDIR)/
	install -m 0644 build/docs/man/*.1 $(DESTDIR)$(MANDIR)/man1/
	install -m 0644 build/docs/man/*.5 $(DESTDIR)$(MANDIR)/man5/
	install -m 0644 build/docs/man/*.8 $(DESTDIR)$(MANDIR)/man8/
	install -m 0644 build/docs/completions/* $(DESTDIR)$(BASHCOMPDIR)/
	for u in packaging/systemd/*.service; do \
		sed 's#/usr/sbin/#$(SBINDIR)/#g' $$u >$(DESTDIR)$(UNITDIR)/$$(basename $$u); chmod 0644 $(DESTDIR)$(UNITDIR)/$$(basename $$u); done
	install -m 0644 packaging/tmpfiles/hoststat.conf $(DESTDIR)$(TMPFILESDIR)/hoststat.conf
	install -d $(DESTDIR)$(DOCDIR)/examples
	sed 's#/usr/sbin/#$(SBINDIR)/#g' packaging/examples/hoststat-statd-etcd.conf >$(DESTDIR)$(DOCDIR)/examples/hoststat-statd-etcd.conf
	chmod 0644 $(DESTDIR)$(DOCDIR)/examples/hoststat-statd-etcd.conf
	install -m 0644 packaging/examples/keepalived.conf packaging/examples/pacemaker.crm packaging/examples/pacemaker-pcs.sh \
		packaging/examples/kubernetes.yaml $(DESTDIR)$(DOCDIR)/examples/
	[ -e $(DESTDIR)$(SYSCONFDIR)/hoststat.conf ] || install -m 0644 build/docs/hoststat.conf $(DESTDIR)$(SYSCONFDIR)/hoststat.conf

## deb: a Debian package (nfpm) of what install puts in place, in build/.
deb:
	rm -rf build/pkg
	$(MAKE) install DESTDIR=$(CURDIR)/build/pkg PREFIX=/usr UNITDIR=/lib/systemd/system SYSCONFDIR=/etc EXTRA_LDFLAGS="-s -w"
	gzip -9n build/pkg/usr/share/man/man*/*
	install -d build/pkg/usr/share/doc/hoststat
	gzip -9n <packaging/changelog >build/pkg/usr/share/doc/hoststat/changelog.gz
	VERSION=$(VERSION) ARCH=$(ARCH) $(GO) run github.com/goreleaser/nfpm/v2/cmd/nfpm@$(NFPM_VERSION) \
		package --config packaging/nfpm.yaml --packager deb --target build/hoststat_$(VERSION)_$(ARCH).deb
	@ls -l build/hoststat_$(VERSION)_$(ARCH).deb

NFPM_VERSION ?= v2.45.2

## deb-check: build the package, lint it, install it, run every command, check
##   units and manual pages, remove it, and check the machine is as it was (root).
deb-check: deb
	scripts/deb-check build/hoststat_$(VERSION)_$(ARCH).deb

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
	rm -rf bin build demo-state

statd-demo: build
	scripts/statd-demo
