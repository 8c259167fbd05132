# The two README commands are `make demo` and `make test`; both install what they need.
SHELL := /bin/bash
CARGO ?= cargo
PREFIX ?= /opt/cni/bin
PLUGINS := bridge host-local portmap loopback

.PHONY: deps clients-setup build release demo test bench install fmt lint ci

# Debian packages the demo and the tests use; installed only when something is missing.
deps:
	@scripts/deps.sh

# What the real-client tests (tests/tests/clients_*.rs) need: podman, containerd + runc,
# golang-go, a cnitool built from Debian's source package, a busybox root filesystem and OCI
# image. The tests run this themselves on first use; this target only warms the cache.
clients-setup:
	scripts/clients/setup.sh $${CARGO_TARGET_DIR:-target}/tmp/clients podman containerd cnitool

build:
	$(CARGO) build --workspace --bins

release:
	$(CARGO) build --workspace --bins --release

demo: deps release
	scripts/demo.sh target/release

test: deps build
	$(CARGO) test --workspace -- --test-threads=$${TEST_THREADS:-4}

bench: deps release
	$(CARGO) run --release -p cni-e2e --bin cni-bench -- target/release

install: release
	install -d $(DESTDIR)$(PREFIX)
	for p in $(PLUGINS); do install -m 0755 target/release/$$p $(DESTDIR)$(PREFIX)/$$p.new && mv -f $(DESTDIR)$(PREFIX)/$$p.new $(DESTDIR)$(PREFIX)/$$p; done

fmt:
	$(CARGO) fmt --all

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

ci: deps lint test
