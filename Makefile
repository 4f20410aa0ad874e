# nsrun: build, test, lint, demo, install.
#
#   make demo    build, then run a command under nsrun (in the systemd box
#                when PID 1 is not systemd) and show what happened
#   make test    unit tests and the box tier (as root); installs what it needs
#   make lint    gofmt, go vet, staticcheck
#   make bench   benchmarks (as root): launch cost of nsrun beside
#                systemd-run and bwrap, concurrency, memory, and the
#                device-open cost per rule count; see bench/README.md
#   make man     generate the man pages into bin/man
#   make install PREFIX=/usr/local DESTDIR=
#   make clean

SHELL := /bin/bash
export PATH := /usr/local/go/bin:$(PATH)

PREFIX  ?= /usr/local
DESTDIR ?=
BIN     := $(CURDIR)/bin
GO      ?= go
STATICCHECK_VERSION := v0.8.2

# Debian packages the box tier needs: systemd as the box's PID 1, dbus for its
# system bus, util-linux (unshare, nsenter, setpriv), passwd (useradd for the
# box's test user), uidmap (newuidmap/newgidmap for unprivileged id maps),
# strace (the fault tests inject system call errors with it), musl-tools
# (musl-gcc builds the monitor, internal/monitor).
DEB_PACKAGES := systemd dbus util-linux passwd uidmap strace musl-tools
# What make bench compares nsrun with (bwrap), profiles it with (strace) and
# draws the scaling figures with (gnuplot).
BENCH_DEB_PACKAGES := bubblewrap strace gnuplot-nox
# The VM tier: qemu to boot the guest, debootstrap and e2fsprogs (mkfs.ext4
# -d) to build its image once.
VM_DEB_PACKAGES := qemu-system-x86 debootstrap e2fsprogs

.PHONY: all monitor build man test test-unit test-vm vm-image bench bench-deps vm-deps deps lint demo install clean box

all: build

# nsrun is built without cgo: a static binary starts about 1.5 ms sooner
# (no dynamic loader, no libc start-up), for nsrun itself and for the
# sandbox child it re-executes; see bench/README.md. User and group names
# then come from /etc/passwd and /etc/group (Go's own parser), not NSS.
# -tags nodocs leaves the man page generator out (make man builds it in).
# The monitor (internal/monitor: nsrun's long-lived processes as a small
# static C program) is built first and embedded with -tags nsrun_monitor; a
# plain go build leaves it out and nsrun falls back to Go and /bin/sh.
MONITOR := internal/monitor/nsrun-monitor
TAGS    := nsrun_monitor
monitor: $(MONITOR)
$(MONITOR): internal/monitor/c/monitor.c
	@command -v musl-gcc >/dev/null || { echo "make: musl-gcc is missing (Debian: musl-tools; make deps installs it)"; exit 1; }
	musl-gcc -static -Os -Wall -Wextra -o $@ $<
	strip $@

build: $(MONITOR)
	CGO_ENABLED=0 $(GO) build -tags nodocs,$(TAGS) -o $(BIN)/nsrun ./cmd/nsrun
	$(GO) build -o $(BIN)/nsrun-box ./internal/box/cmd/nsrun-box

# Install the Debian packages that are missing (needs root and apt-get).
deps: PACKAGES = $(DEB_PACKAGES)
bench-deps: PACKAGES = $(DEB_PACKAGES) $(BENCH_DEB_PACKAGES)
vm-deps: PACKAGES = $(DEB_PACKAGES) $(VM_DEB_PACKAGES)
deps bench-deps vm-deps:
	@missing=""; for p in $(PACKAGES); do \
		dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
		if [ "$$(id -u)" != 0 ]; then echo "make $@: missing Debian packages:$$missing (run as root)"; exit 1; fi; \
		echo "make $@: installing$$missing"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	fi
	$(GO) mod download

# Unit tests and the box tier, one package at a time (each suite checks the
# host is as it found it, which another suite's live box would upset).
# Set NSRUN_TEST_STRICT=1 to turn every skip of
# a privileged test into a failure (CI does).
test: deps build
	NSRUN_BIN=$(BIN)/nsrun $(GO) test -tags $(TAGS) -p 1 -count=1 -timeout 20m ./...

# The tests that need no root and no box.
test-unit:
	$(GO) test -count=1 ./units/... ./delegate/... ./internal/cgv2/... ./internal/archtest/...

# The VM tier (root): limits seen holding on a pure cgroup v2 guest with
# systemd as PID 1. The image is built once (about a minute with a reachable
# Debian mirror) and cached in $$NSRUN_VM_CACHE or ~/.cache/nsrun/vm, keyed by
# the recipe in internal/vm/recipe; each run boots it with qemu (software
# emulation unless KVM really works), runs internal/vm/guest's tests as root
# and as the guest's user, and writes go test -json to bin/vm/results.json.
# VM_FLAGS passes options to nsrun-vm test (e.g. VM_FLAGS="-run TestCPUQuota").
VM_FLAGS ?=
test-vm: vm-deps $(MONITOR)
	mkdir -p $(BIN)/vm
	CGO_ENABLED=0 $(GO) build -tags $(TAGS) -o $(BIN)/vm/nsrun ./cmd/nsrun
	CGO_ENABLED=0 $(GO) test -c -tags vmguest -o $(BIN)/vm/nsrun-vm.test ./internal/vm/guest
	$(GO) build -o $(BIN)/nsrun-vm ./internal/vm/cmd/nsrun-vm
	$(BIN)/nsrun-vm test -nsrun $(BIN)/vm/nsrun -tests $(BIN)/vm/nsrun-vm.test \
		-json $(BIN)/vm/results.json -serial $(BIN)/vm/serial.log $(VM_FLAGS)

vm-image: vm-deps
	$(GO) run ./internal/vm/cmd/nsrun-vm image

# Benchmarks against the real kernel (root, the box). Performance is
# measured here, never asserted in a test. The report goes to stdout and to
# bench/results/<date>-<kernel>.txt. BENCH_FLAGS passes options to
# nsrun-bench (e.g. BENCH_FLAGS="-runs=100 -conc=1,10,50,100").
BENCH_FLAGS ?=
bench: bench-deps build
	$(GO) build -o $(BIN)/nsrun-bench ./bench/cmd/nsrun-bench
	set -o pipefail; $(GO) test -p 1 -count=1 -run '^$$' -bench . -benchtime 200000x ./bpfdev/... | tee $(BIN)/bench-device.txt
	$(BIN)/nsrun-bench -nsrun=$(BIN)/nsrun -results=bench/results -device=$(BIN)/bench-device.txt -strace $(BENCH_FLAGS)

# The monitor is built first: vet with -tags nsrun_monitor embeds it (and a
# clean clone has neither it nor musl-gcc; deps installs that).
lint: deps $(MONITOR)
	@bad=$$(gofmt -l .); \
		if [ -n "$$bad" ]; then echo "gofmt would change:"; echo "$$bad"; exit 1; fi
	$(GO) vet ./...
	$(GO) vet -tags $(TAGS) ./...
	$(GO) vet -tags vmguest ./internal/vm/guest
	$(GO) run honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION) ./...
	$(GO) run honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION) -tags vmguest ./internal/vm/guest

demo: deps build
	@./contrib/demo.sh $(BIN)

# A box for manual use: prints how to enter it; Ctrl-C tears it down.
box: deps build
	$(BIN)/nsrun-box --share=$(BIN)

# Man pages come from the binary's own flag and profile-key definitions
# (nsrun __gendocs), so they cannot drift from the code.
man:
	$(GO) build -o $(BIN)/nsrun-gendocs ./cmd/nsrun
	rm -rf $(BIN)/man
	$(BIN)/nsrun-gendocs __gendocs $(BIN)/man

# Where a distribution puts things: units and drop-ins in $(PREFIX)/lib/systemd
# (systemd searches /usr/lib and /usr/local/lib), vendor profiles in
# $(PREFIX)/lib/nsrun/profiles (nsrun searches both too), man pages and
# completions under $(PREFIX)/share. nsrun@.service gets the installed
# binary's path.
UNITDIR    := $(PREFIX)/lib/systemd/system
PROFILEDIR := $(PREFIX)/lib/nsrun/profiles
MANDIR     := $(PREFIX)/share/man

install: build man
	install -D -m 0755 $(BIN)/nsrun $(DESTDIR)$(PREFIX)/bin/nsrun
	install -d $(DESTDIR)$(UNITDIR)/user@.service.d $(DESTDIR)$(PROFILEDIR) \
		$(DESTDIR)$(MANDIR)/man1 $(DESTDIR)$(MANDIR)/man5
	sed 's|^ExecStart=/usr/bin/nsrun |ExecStart=$(PREFIX)/bin/nsrun |' contrib/systemd/nsrun@.service \
		> $(DESTDIR)$(UNITDIR)/nsrun@.service
	chmod 0644 $(DESTDIR)$(UNITDIR)/nsrun@.service
	install -m 0644 contrib/systemd/nsrun.slice $(DESTDIR)$(UNITDIR)/nsrun.slice
	install -m 0644 contrib/systemd/user@.service.d/delegate.conf \
		$(DESTDIR)$(UNITDIR)/user@.service.d/nsrun-delegate.conf
	install -m 0644 contrib/profiles/*.conf $(DESTDIR)$(PROFILEDIR)/
	install -m 0644 $(BIN)/man/*.1 $(DESTDIR)$(MANDIR)/man1/
	install -m 0644 $(BIN)/man/*.5 $(DESTDIR)$(MANDIR)/man5/
	install -d $(DESTDIR)$(PREFIX)/share/bash-completion/completions \
		$(DESTDIR)$(PREFIX)/share/zsh/site-functions \
		$(DESTDIR)$(PREFIX)/share/fish/vendor_completions.d
	$(BIN)/nsrun completion bash > $(DESTDIR)$(PREFIX)/share/bash-completion/completions/nsrun
	$(BIN)/nsrun completion zsh > $(DESTDIR)$(PREFIX)/share/zsh/site-functions/_nsrun
	$(BIN)/nsrun completion fish > $(DESTDIR)$(PREFIX)/share/fish/vendor_completions.d/nsrun.fish

clean:
	rm -rf $(BIN) $(MONITOR)
