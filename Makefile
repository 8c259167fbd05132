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

# The plugins of a release build are linked statically (glibc, crt-static): measured, they
# start about 0.35 ms sooner and use about 0.7 MB less memory per invocation than when
# linked dynamically (PERFORMANCE.md). They are built for the explicit host target, so that
# the flag reaches neither build scripts nor proc-macros, then copied over the dynamic ones
# in target/release, where everything else (demo, bench, install) takes them from.
# With LLD (rustc's default linker on x86_64 Linux), each plugin's hot functions are placed
# together (scripts/symbol-order.sh): a third less memory per invocation. The link maps
# (target/<host>/release/<plugin>.map) are what `scripts/symbol-order.sh --check` reads. The
# list is passed as a copy named by its digest: cargo relinks when the arguments change.
# Relative relocations are packed (DT_RELR: `-z pack-relative-relocs`, 0.6 KiB instead of
# 57 KiB of `.rela.dyn` that every start reads: about 60 KiB less memory per invocation) when
# the glibc linked in applies them itself, 2.36 or later; each plugin is then run once
# (VERSION) and relinked without them if it fails.
HOST_TRIPLE := $(shell rustc -vV 2>/dev/null | sed -n 's/^host: //p')
GLIBC_RELR := $(shell getconf GNU_LIBC_VERSION 2>/dev/null | awk '{ split($$2, v, "."); print (v[1] > 2 || (v[1] == 2 && v[2] >= 36)) ? "yes" : "no" }')
TARGET_DIR := $(or $(CARGO_TARGET_DIR),target)
TARGET_ABS := $(abspath $(TARGET_DIR))

release:
	$(CARGO) build --workspace --bins --release
	lld=$$(readelf -p .comment $(TARGET_DIR)/release/bridge 2>/dev/null | grep -c 'Linker: LLD' || true); \
	for p in $(PLUGINS); do \
		order="-C strip=symbols"; \
		if [ "$$lld" != 0 ] && [ -f scripts/symbol-order/$$p.txt ]; then \
			list=$(TARGET_ABS)/symbol-order-$$p-$$(sha256sum scripts/symbol-order/$$p.txt | cut -c1-16).txt; \
			cp scripts/symbol-order/$$p.txt $$list || exit 1; \
			order="$$order -C link-arg=-Wl,--symbol-ordering-file=$$list \
				-C link-arg=-Wl,--no-warn-symbol-ordering \
				-C link-arg=-Wl,-Map=$(TARGET_ABS)/$(HOST_TRIPLE)/release/$$p.map"; \
		fi; \
		relr=""; \
		if [ "$$lld" != 0 ] && [ "$(GLIBC_RELR)" = yes ]; then relr="-C link-arg=-Wl,-z,pack-relative-relocs"; fi; \
		RUSTFLAGS="$(RUSTFLAGS) -C target-feature=+crt-static" $(CARGO) rustc --release \
			--target $(HOST_TRIPLE) -p $$p --bin $$p -- $$order $$relr || exit 1; \
		if [ -n "$$relr" ] && ! CNI_COMMAND=VERSION $(TARGET_DIR)/$(HOST_TRIPLE)/release/$$p </dev/null >/dev/null 2>&1; then \
			echo "$$p does not start with packed relocations; linking it without them"; \
			RUSTFLAGS="$(RUSTFLAGS) -C target-feature=+crt-static" $(CARGO) rustc --release \
				--target $(HOST_TRIPLE) -p $$p --bin $$p -- $$order || exit 1; \
		fi; \
		install -m 0755 $(TARGET_DIR)/$(HOST_TRIPLE)/release/$$p $(TARGET_DIR)/release/.$$p.static && \
		mv -f $(TARGET_DIR)/release/.$$p.static $(TARGET_DIR)/release/$$p || exit 1; \
	done

demo: deps release
	scripts/demo.sh $(TARGET_DIR)/release

test: deps build
	$(CARGO) test --workspace -- --test-threads=$${TEST_THREADS:-4}

bench: deps release
	$(CARGO) run --release -p cni-e2e --bin cni-bench -- $(TARGET_DIR)/release

install: release
	install -d $(DESTDIR)$(PREFIX)
	for p in $(PLUGINS); do install -m 0755 $(TARGET_DIR)/release/$$p $(DESTDIR)$(PREFIX)/$$p.new && mv -f $(DESTDIR)$(PREFIX)/$$p.new $(DESTDIR)$(PREFIX)/$$p; done

fmt:
	$(CARGO) fmt --all

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

ci: deps lint test
