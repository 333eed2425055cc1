# Ironclaw: build, run and test. `make run` serves the repo's plugins/ and policies/;
# `make test` is what CI runs (.ci/run).

CARGO ?= cargo
PROFILE ?= release
TARGET_DIR := target/$(if $(filter dev,$(PROFILE)),debug,$(PROFILE))
# Cargo features of the binaries: empty for `make build` and `make install`; the VM suite
# installs with FEATURES=test-hooks (PROFILE=release-hooks). The host tests always run with the hooks.
FEATURES ?=
FEATURE_FLAGS := $(if $(FEATURES),--features ironclaw/$(FEATURES))
TEST_FLAGS := --features ironclaw/test-hooks

# Native plugins: cargo package -> library file copied into the plugin folder.
NATIVE_PLUGINS := calculator file_ops weather web_search

# Installation: `make install` (as root), `make install DESTDIR=/tmp/root PREFIX=/usr`.
PREFIX ?= /usr/local
DESTDIR ?=
SYSCONFDIR ?= /etc
BINDIR := $(DESTDIR)$(PREFIX)/bin
PLUGINDIR := $(DESTDIR)$(PREFIX)/lib/ironclaw/plugins
UNITDIR := $(DESTDIR)$(PREFIX)/lib/systemd/system
DOCDIR := $(DESTDIR)$(PREFIX)/share/doc/ironclaw
CONFDIR := $(DESTDIR)$(SYSCONFDIR)/ironclaw
# Every plugin folder of plugins/ (a folder with a plugin.toml).
ALL_PLUGINS := $(patsubst plugins/%/plugin.toml,%,$(wildcard plugins/*/plugin.toml))

.PHONY: all build plugins run test escape fuzz api-fuzz vm-test lint bench clean install uninstall

all: build plugins

build:
	$(CARGO) build --profile $(PROFILE) $(FEATURE_FLAGS) --bin ironclawd --bin ironclaw

## Builds the native plugins and puts each library next to its plugin.toml.
plugins:
	$(CARGO) build --profile $(PROFILE) $(addprefix -p ,$(NATIVE_PLUGINS))
	for p in $(NATIVE_PLUGINS); do install -m 0644 $(TARGET_DIR)/lib$$p.so plugins/$$p/lib$$p.so; done

## Runs the daemon (as root) on the repo's plugins/ and policies/, socket /run/ironclaw/ironclaw.sock.
run: build plugins
	$(TARGET_DIR)/ironclawd

## Lints, then every test: unit, integration and enforcement tests on this host, then the VM
## suite (a real kernel with cgroup v2 and systemd as PID 1). Both need root; see README.md.
test: lint
	$(CARGO) build --workspace --all-targets $(TEST_FLAGS)
	$(MAKE) plugins PROFILE=dev
	$(CARGO) test --workspace --no-fail-fast $(TEST_FLAGS) -- --skip no_escape_attempt_gets_through
	$(MAKE) escape
	$(MAKE) api-fuzz
	$(MAKE) fuzz
	$(MAKE) vm-test

## The adversarial escape suite, with its per-attempt lines and the "N attempted, 0 escaped" summary.
escape:
	$(CARGO) test $(TEST_FLAGS) --test escape no_escape_attempt_gets_through -- --nocapture

## schemathesis (from PyPI, into target/venv) against a live daemon on the repo's plugins: no 5xx,
## every answer as the OpenAPI document says, the daemon alive at the end.
api-fuzz:
	$(CARGO) build --workspace --all-targets $(TEST_FLAGS)
	tests/api_fuzz/run.sh target/debug

## Each cargo-fuzz target for FUZZ_SECONDS (libFuzzer without a sanitizer: the targets are safe
## Rust, so it looks for panics, stack overflows, hangs and runaway memory). A finding is saved
## in fuzz/artifacts/; fixed, its input goes to fuzz/regressions/<target>/.
FUZZ_SECONDS ?= 30
FUZZ_TARGETS := manifest policy ipc_frame calculator
fuzz:
	command -v cargo-fuzz > /dev/null || $(CARGO) install cargo-fuzz --locked --version 0.13.2
	for t in $(FUZZ_TARGETS); do \
		mkdir -p target/fuzz-corpus/$$t && \
		$(CARGO) fuzz run --features libfuzzer --sanitizer none $$t target/fuzz-corpus/$$t fuzz/seeds/$$t \
			-- -max_total_time=$(FUZZ_SECONDS) -timeout=5 -rss_limit_mb=2048 > target/fuzz-$$t.log 2>&1; \
		status=$$?; \
		echo "fuzz $$t: $$(grep -E '^Done [0-9]+ runs' target/fuzz-$$t.log)"; \
		[ $$status -eq 0 ] || { tail -n 60 target/fuzz-$$t.log; exit 1; }; \
	done

## The VM suite alone (about 3 minutes with its cached root, 6 on a fresh clone).
vm-test:
	tests/vm/run.sh

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	$(CARGO) clippy --workspace --all-targets $(TEST_FLAGS) -- -D warnings

## Latency, throughput and memory of the daemon (see README.md for the figures).
bench: build plugins
	$(CARGO) bench --bench execute
	$(CARGO) bench --bench mcp
	$(CARGO) bench --bench reload

## Installs the release build: binaries, plugins (manifest, artifact, scripts; no sources),
## units, the default policies and config (an admin's edited file is kept; the new default is
## put beside it as *.dist), and the README.
install: build plugins
	install -d $(BINDIR) $(PLUGINDIR) $(UNITDIR) $(DOCDIR) $(CONFDIR)/policies
	install -m 0755 $(TARGET_DIR)/ironclawd $(TARGET_DIR)/ironclaw $(BINDIR)/
	for p in $(ALL_PLUGINS); do \
	  install -d $(PLUGINDIR)/$$p; \
	  for f in plugins/$$p/*; do \
	    case "$$f" in */src|*/Cargo.toml|*/target) continue;; esac; \
	    [ -f "$$f" ] && install -m 0644 "$$f" $(PLUGINDIR)/$$p/; \
	  done; \
	done
	for u in ironclawd.service ironclawd.socket; do \
	  sed -e 's|/usr/local|$(PREFIX)|g' systemd/$$u > $(UNITDIR)/$$u; chmod 0644 $(UNITDIR)/$$u; \
	done
	sed -e 's|@PREFIX@|$(PREFIX)|g' systemd/ironclawd.toml > $(TARGET_DIR)/ironclawd.toml
	for pair in $(TARGET_DIR)/ironclawd.toml:$(CONFDIR)/ironclawd.toml $(foreach p,$(wildcard policies/*.toml),$(p):$(CONFDIR)/$(p)); do \
	  src=$${pair%%:*}; f=$${pair#*:}; \
	  if [ ! -e "$$f" ]; then install -m 0644 "$$src" "$$f"; \
	  elif ! cmp -s "$$src" "$$f"; then install -m 0644 "$$src" "$$f.dist"; echo "kept your $$f; the new default is $$f.dist"; fi; \
	done
	install -m 0644 README.md $(DOCDIR)/README.md
	install -m 0644 plugins/README.md $(DOCDIR)/PLUGINS.md
	@echo "installed under $(DESTDIR)$(PREFIX) and $(CONFDIR); then: systemctl daemon-reload && systemctl enable --now ironclawd"

## Removes what `make install` put in place. Configuration files an admin changed are kept.
uninstall:
	rm -f $(BINDIR)/ironclawd $(BINDIR)/ironclaw $(UNITDIR)/ironclawd.service $(UNITDIR)/ironclawd.socket
	rm -rf $(PLUGINDIR) $(DOCDIR)
	rmdir $(DESTDIR)$(PREFIX)/lib/ironclaw 2>/dev/null || true
	for f in $(patsubst policies/%,$(CONFDIR)/policies/%,$(wildcard policies/*.toml)); do \
	  if cmp -s "policies/$${f##*/}" "$$f"; then rm -f "$$f"; elif [ -e "$$f" ]; then echo "kept your edited $$f"; fi; \
	  rm -f "$$f.dist"; \
	done
	sed -e 's|@PREFIX@|$(PREFIX)|g' systemd/ironclawd.toml | cmp -s - $(CONFDIR)/ironclawd.toml && rm -f $(CONFDIR)/ironclawd.toml || true
	rm -f $(CONFDIR)/ironclawd.toml.dist
	[ -e $(CONFDIR)/ironclawd.toml ] && echo "kept your edited $(CONFDIR)/ironclawd.toml" || true
	rmdir $(CONFDIR)/policies $(CONFDIR) 2>/dev/null || true

clean:
	$(CARGO) clean
	rm -f $(foreach p,$(NATIVE_PLUGINS),plugins/$(p)/lib$(p).so)
