# Eventline developer commands. `make run` and `make test` install what they need.

VENV        := .venv
LINT_VENV   := .venv-lint
PYTHON      ?= python3
ADDR        ?= 127.0.0.1:3000
export SAM_CLI_TELEMETRY := 0
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)

.PHONY: help run test check lint check-template build deploy bench-generate clean tools fuzz fuzz-smoke fuzz-tool mutants mutants-tool
.DEFAULT_GOAL := help

## help: this list of targets
help:
	@sed -n 's/^## \([^:]*\): /\1\t/p' $(MAKEFILE_LIST) | awk -F'\t' '{ printf "  make %-22s %s\n", $$1, $$2 }'

## run: the whole pipeline locally on 127.0.0.1:3000 (override: make run ADDR=127.0.0.1:8080)
run: $(VENV)/.run
	cargo run --profile local -p eventline-local -- --addr $(ADDR)

## test: every test (unit, emulator integration, Lambda runtime), after linting the template
test: $(VENV)/.dev tools check-template stack-tests/producers/node_modules/.installed
	$(VENV)/bin/python -m unittest tools/local/test_moto_server.py
	cargo nextest run --workspace --no-fail-fast
	$(MAKE) sam-local-if-available
	$(MAKE) fuzz-smoke
	$(MAKE) bench-local-smoke

## check: formatting, clippy and the unit tests (no emulator): the fast loop while changing code
check: $(VENV)/.dev
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings
	cargo nextest run --workspace --exclude eventline-stack-tests

## lint: formatting, clippy, and the template's checks (cfn-lint with informational rules, checkov), as CI runs them
# checkov findings left in place are skipped in the template itself, each with its reason.
lint: $(VENV)/.dev $(LINT_VENV)/.installed
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings
	$(VENV)/bin/cfn-lint --include-checks I -- template.yaml
	$(LINT_VENV)/bin/checkov --file template.yaml --framework cloudformation --compact --quiet --skip-download

check-template: $(VENV)/.dev
	sam validate --lint

## build: the functions for Lambda with SAM (arm64 by default)
build: $(VENV)/.dev
	rustup target add aarch64-unknown-linux-gnu
	sam build

## deploy: build, then deploy with the defaults in samconfig.toml (asks before changing anything)
deploy: build
	sam deploy --guided

## bench-generate: generator throughput for 1M and 10M events, beside a plain baseline
bench-generate:
	cargo run --release -p eventline-gen --bin bench-generate

# Fuzz targets in fuzz/ (a crate of their own, built in fuzz/target). cargo-fuzz passes
# nightly-only rustc flags; RUSTC_BOOTSTRAP lets the stable toolchain accept them.
# FUZZ_BUILD_FLAGS=--no-default-features leaves out the DynamoDB item checks and the AWS SDK
# they need, for a much shorter cold build.
FUZZ_TARGETS       := event stream_record kpl
FUZZ_SECONDS       ?= 60
FUZZ_SMOKE_SECONDS ?= 15
FUZZ_BUILD_FLAGS   ?=
CARGO_FUZZ_VERSION := 0.13.2
# The smoke run in make test skips the AWS item checks (they pull the AWS SDK into a cold
# instrumented build of several minutes) and writes what it finds under fuzz/target, leaving
# the kept corpus as it is; make fuzz runs everything and grows the kept corpus.
FUZZ_SMOKE_FLAGS   ?= --no-default-features
FUZZ_RUN = for target in $(FUZZ_TARGETS); do \
	mkdir -p $(3)/$$target && \
	RUSTC_BOOTSTRAP=1 cargo fuzz run $(2) $$target $(3)/$$target $(CURDIR)/fuzz/corpus/$$target -- \
		-max_total_time=$(1) -timeout=30 -dict=$(CURDIR)/fuzz/json.dict -print_final_stats=1 || exit 1; \
	done

## fuzz: each fuzz target for 60 s on its corpus in fuzz/corpus (override: make fuzz FUZZ_SECONDS=600)
fuzz: fuzz-tool
	$(call FUZZ_RUN,$(FUZZ_SECONDS),$(FUZZ_BUILD_FLAGS),$(CURDIR)/fuzz/corpus)

# The short run `make test` does: $(FUZZ_SMOKE_SECONDS) s per target.
fuzz-smoke: fuzz-tool
	$(call FUZZ_RUN,$(FUZZ_SMOKE_SECONDS),$(FUZZ_SMOKE_FLAGS),$(CURDIR)/fuzz/target/smoke-corpus)

fuzz-tool:
	@command -v cargo-fuzz >/dev/null || cargo install --locked cargo-fuzz --version $(CARGO_FUZZ_VERSION)

# Mutation testing of the model's hostile-input core (event validation, JSON reading,
# stream-record decoding) against the model crate's own tests, one mutant at a time: about
# 30 minutes on 2 cores, so it is not part of `make test`. The model's default features
# leave out the AWS adapters, which none of these files use. Exclusions, each with its
# reason, are in .cargo/mutants.toml; results go to mutants.out. A mutant that hangs is
# stopped after MUTANTS_TIMEOUT seconds and fails the run.
CARGO_MUTANTS_VERSION := 27.1.0
MUTANTS_FILES         := model/src/validation.rs model/src/json.rs model/src/record.rs
MUTANTS_TIMEOUT       ?= 120

## mutants: every mutant of the model's validation, JSON reading and stream-record decoding must fail a model test (results in mutants.out)
mutants: mutants-tool
	nice -n 15 cargo mutants -j 1 -p eventline-model $(addprefix -f ,$(MUTANTS_FILES)) --timeout $(MUTANTS_TIMEOUT)

mutants-tool:
	@command -v cargo-mutants >/dev/null || cargo install --locked cargo-mutants --version $(CARGO_MUTANTS_VERSION)

$(VENV)/bin/pip:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.run: tools/local/requirements.txt | $(VENV)/bin/pip
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -r tools/local/requirements.txt
	touch $@

$(VENV)/.dev: requirements-dev.txt tools/local/requirements.txt | $(VENV)/bin/pip
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	touch $@ $(VENV)/.run

$(LINT_VENV)/.installed: requirements-lint.txt
	$(PYTHON) -m venv $(LINT_VENV)
	$(LINT_VENV)/bin/pip install --quiet --disable-pip-version-check -r requirements-lint.txt
	touch $@

# Segment's Node SDK, which stack-tests/tests/producers.rs sends with, at the locked version.
stack-tests/producers/node_modules/.installed: stack-tests/producers/package.json stack-tests/producers/package-lock.json | tools
	npm ci --prefix stack-tests/producers --no-audit --no-fund --loglevel=error
	touch $@

# System tools the tests use: cargo-nextest, the sqlite3 shell, chromium (the dashboard page
# and producer tests) and Node with npm (Segment's Node SDK).
tools:
	@command -v cargo-nextest >/dev/null || cargo install --locked cargo-nextest
	@command -v sqlite3 >/dev/null || { apt-get update -qq && apt-get install -y -qq sqlite3; }
	@command -v chromium >/dev/null || { apt-get update -qq && apt-get install -y -qq chromium; }
	@command -v npm >/dev/null || { apt-get update -qq && apt-get install -y -qq nodejs npm; }

clean:
	cargo clean
	rm -rf $(VENV) $(LINT_VENV) .aws-sam

# sam local: `sam local invoke` and `sam local start-api` over template.yaml, with podman
# serving the Docker API they need. podman's configuration, storage and socket are private to
# each run (under .local/sam-local), so nothing else on the machine is touched or seen.
SAM_LOCAL_PACKAGES := podman runc slirp4netns busybox-static

.PHONY: sam-local sam-local-if-available sam-local-packages

## sam-local: every events/ file through `sam local invoke`, then HTTP checks through `sam local start-api`, against the emulator
sam-local: $(VENV)/.dev sam-local-packages
	cargo build --bin ingest --bin transform --bin query --bin admin --bin authorizer
	$(VENV)/bin/python tools/sam-local/sam_local.py

# Installs the Debian packages that are missing (apt-get, as root). Elsewhere the run itself
# names what it cannot find.
sam-local-packages:
	@command -v dpkg-query >/dev/null || exit 0; \
	missing=$$(for p in $(SAM_LOCAL_PACKAGES); do \
		dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q 'install ok installed' || echo $$p; done); \
	[ -z "$$missing" ] && exit 0; \
	if [ "$$(id -u)" != 0 ]; then echo "sam-local: missing packages:" $$missing "(apt-get install them as root)"; exit 1; fi; \
	echo "sam-local: installing" $$missing; \
	apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing

# What `make test` runs: the pass-through's unit tests, then sam-local where podman is
# installed or can be (apt-get as root); elsewhere it says what is missing and passes.
sam-local-if-available: $(VENV)/.dev
	$(VENV)/bin/python -m unittest discover -s tools/sam-local -p 'test_*.py'
	@if command -v podman >/dev/null || { command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; }; then \
		$(MAKE) sam-local; \
	else \
		echo "sam-local: SKIPPED: podman is not installed and cannot be installed here (needs apt-get as root)."; \
		echo "sam-local: install $(SAM_LOCAL_PACKAGES), then run make sam-local."; \
	fi

## bench-local: the emulator's ceiling for the pipeline's calls, then the whole local stack under `eventline-gen load` (override: make bench-local BENCH_RATE=500 BENCH_SECONDS=30)
BENCH_RATE    ?= 1000
BENCH_SECONDS ?= 60
.PHONY: bench-local
bench-local: $(VENV)/.run
	cargo build --profile local -p eventline-local
	cargo build --release -p eventline-gen
	$(VENV)/bin/python tools/local/benches/bench_local.py --rate $(BENCH_RATE) --seconds $(BENCH_SECONDS)

# The short run `make test` does: a few seconds at a low rate, on the debug builds of the
# stack and the generator that the tests made. It fails when an event is lost or left
# uncounted, not on speed.
.PHONY: bench-local-smoke
bench-local-smoke: $(VENV)/.run
	@test -x target/debug/eventline-local -a -x target/debug/eventline-gen || { \
		echo "bench-local-smoke: needs the debug builds of eventline-local and eventline-gen (make test makes them)"; \
		exit 1; }
	$(VENV)/bin/python tools/local/benches/bench_local.py --rate 100 --seconds 5 --raw-seconds 3 \
		--stack target/debug/eventline-local --generator target/debug/eventline-gen

# bench: the figures of docs/figures.md, each beside a baseline measured in
# the same run (tools/bench/src/bin/figures.rs prints them as one table), then bench-local.
# The functions are measured as `sam build` makes them: arm64 (the template's default) for
# the package sizes, x86_64 (this machine's architecture) for the cold starts; the
# hello-world baselines (the runtime's example, and the same on the functions' one-thread
# runtime) go through cargo-lambda's release build like them.
BENCH_SAM_DIR := .aws-sam/bench
.PHONY: bench bench-build

## bench: cold start, package size, CPU per request, AWS requests and write units, read cost; then bench-local
bench: $(VENV)/.dev bench-build
	cargo bench -p eventline-ingest --bench ingest_request
	cargo run --profile local -p eventline-bench --bin figures
	$(MAKE) bench-local

bench-build: $(VENV)/.dev
	@if rustup target add aarch64-unknown-linux-gnu; then \
		sam build --no-cached --build-dir $(BENCH_SAM_DIR)/arm64 && \
		cargo lambda build --release --arm64 -p eventline-hello-world --lambda-dir target/lambda/arm64; \
	else \
		echo "bench: no aarch64-unknown-linux-gnu target here; package sizes are measured for x86_64"; \
	fi
	sam build --no-cached --build-dir $(BENCH_SAM_DIR)/x86_64 --parameter-overrides Architecture=x86_64
	cargo lambda build --release --x86-64 -p eventline-hello-world --lambda-dir target/lambda/x86_64
