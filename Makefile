# landscaped: every target sets itself up first (scripts/setup.sh is idempotent and fast once cached).
.PHONY: setup test-deps build test demo bench fuzz soak clean
CARGO ?= cargo

setup:
	@scripts/setup.sh

# Both binaries: landscaped (no libtorch) and landscaped-worker (the TorchScript model worker).
build: setup
	$(CARGO) build --release --workspace

# System packages the daemon tests use (systemd-analyze, a real Prometheus + promtool), from Debian.
test-deps:
	@scripts/ci-deps.sh

# The test command CI runs (.ci/run): formatting, lints as errors, then every test.
test: setup test-deps
	$(CARGO) fmt --all --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	$(CARGO) build --workspace
	$(CARGO) test --workspace --all-targets

# The main job on the built-in demo: trains small runs, ingests them, prints tables, writes plots.
demo: build
	@scripts/demo.sh

# Every benchmark, each printing ratios against its baseline run in the same invocation:
# ingest (bench.sh), daemon, /healthz under idle connections, trajectory PCA, slices, sharpness. `make bench BENCH=pca` runs one.
BENCH ?= all
bench: build
	@if [ "$(BENCH)" = all ] || [ "$(BENCH)" = ingest ]; then scripts/bench.sh; fi
	@for b in daemon healthz pca slice sharpness; do \
	  if [ "$(BENCH)" = all ] || [ "$(BENCH)" = $$b ]; then echo "== bench: $$b"; scripts/bench_$$b.sh || exit 1; fi; \
	done

# Fuzz every reader target and the pickle scanner (FUZZ_SECONDS each, default 300); prints executions.
fuzz: setup
	@scripts/fuzz.sh

# The long crash-consistency run: 200 checkpoints written while the daemon is SIGKILLed 20 times.
soak: setup
	@scripts/soak.sh

clean:
	$(CARGO) clean
	rm -rf demo-out bench-out
