# Eventline developer commands. `make run` and `make test` install what they need.

VENV        := .venv
PYTHON      ?= python3
ADDR        ?= 127.0.0.1:3000
export SAM_CLI_TELEMETRY := 0
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)

.PHONY: run test lint check-template build deploy bench-generate clean tools

## run: the whole pipeline locally on $(ADDR) (override: make run ADDR=127.0.0.1:8080)
run: $(VENV)/.run
	cargo run -p eventline-local -- --addr $(ADDR)

## test: every test (unit, emulator integration, Lambda runtime), after linting the template
test: $(VENV)/.dev tools check-template
	$(VENV)/bin/python -m unittest tools/local/test_moto_server.py
	cargo nextest run --workspace --no-fail-fast

## lint: formatting and clippy, as CI checks them
lint:
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings

check-template: $(VENV)/.dev
	sam validate --lint

## build: the three functions for Lambda with SAM (arm64 by default)
build: $(VENV)/.dev
	rustup target add aarch64-unknown-linux-gnu
	sam build

## deploy: build, then deploy with the defaults in samconfig.toml (asks before changing anything)
deploy: build
	sam deploy --guided

## bench-generate: generator throughput for 1M and 10M events, beside a plain baseline
bench-generate:
	cargo run --release -p eventline-gen --bin bench-generate

$(VENV)/bin/pip:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.run: tools/local/requirements.txt | $(VENV)/bin/pip
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -r tools/local/requirements.txt
	touch $@

$(VENV)/.dev: requirements-dev.txt tools/local/requirements.txt | $(VENV)/bin/pip
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	touch $@ $(VENV)/.run

# System tools the tests use: cargo-nextest and the sqlite3 shell.
tools:
	@command -v cargo-nextest >/dev/null || cargo install --locked cargo-nextest
	@command -v sqlite3 >/dev/null || { apt-get update -qq && apt-get install -y -qq sqlite3; }

clean:
	cargo clean
	rm -rf $(VENV) .aws-sam
