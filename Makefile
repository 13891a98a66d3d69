# landscaped: every target sets itself up first (scripts/setup.sh is idempotent and fast once cached).
.PHONY: setup test-deps build test demo bench fuzz clean
CARGO ?= cargo

setup:
	@scripts/setup.sh

build: setup
	$(CARGO) build --release

# System packages the daemon tests use (systemd-analyze, a real Prometheus + promtool), from Debian.
test-deps:
	@scripts/ci-deps.sh

# The test command CI runs (.ci/run): formatting, lints as errors, then every test.
test: setup test-deps
	$(CARGO) fmt --check
	$(CARGO) clippy --all-targets -- -D warnings
	$(CARGO) test --all-targets

# The main job on the built-in demo: trains small runs, ingests them, prints tables, writes plots.
demo: build
	@scripts/demo.sh

# Every benchmark, each printing ratios against its baseline run in the same invocation:
# ingest (bench.sh), daemon, trajectory PCA, slices, sharpness. `make bench BENCH=pca` runs one.
BENCH ?= all
bench: build
	@if [ "$(BENCH)" = all ] || [ "$(BENCH)" = ingest ]; then scripts/bench.sh; fi
	@for b in daemon pca slice sharpness; do \
	  if [ "$(BENCH)" = all ] || [ "$(BENCH)" = $$b ]; then echo "== bench: $$b"; scripts/bench_$$b.sh || exit 1; fi; \
	done

fuzz: setup
	@scripts/fuzz.sh

clean:
	$(CARGO) clean
	rm -rf demo-out bench-out
