# Ironclaw: build, run and test. `make run` serves the repo's plugins/ and policies/;
# `make test` is what CI runs (.ci/run).

CARGO ?= cargo
PROFILE ?= release
TARGET_DIR := target/$(if $(filter dev,$(PROFILE)),debug,$(PROFILE))

# Native plugins: cargo package -> library file copied into the plugin folder.
NATIVE_PLUGINS := calculator file_ops weather web_search

.PHONY: all build plugins run test lint bench clean

all: build plugins

build:
	$(CARGO) build --profile $(PROFILE) --bin ironclawd --bin ironclaw

## Builds the native plugins and puts each library next to its plugin.toml.
plugins:
	$(CARGO) build --profile $(PROFILE) $(addprefix -p ,$(NATIVE_PLUGINS))
	for p in $(NATIVE_PLUGINS); do install -m 0644 $(TARGET_DIR)/lib$$p.so plugins/$$p/lib$$p.so; done

## Runs the daemon (as root) on the repo's plugins/ and policies/, socket /run/ironclaw/ironclaw.sock.
run: build plugins
	$(TARGET_DIR)/ironclawd

## Lints, then every test. The enforcement tests need root; see README.md.
test: lint
	$(CARGO) build --workspace --all-targets
	$(MAKE) plugins PROFILE=dev
	$(CARGO) test --workspace --no-fail-fast

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

## Latency, throughput and memory of the daemon (see README.md for the figures).
bench: build plugins
	$(CARGO) bench --bench execute
	$(CARGO) bench --bench reload

clean:
	$(CARGO) clean
	rm -f $(foreach p,$(NATIVE_PLUGINS),plugins/$(p)/lib$(p).so)
