# landscaped: every target sets itself up first (scripts/setup.sh is idempotent and fast once cached).
.PHONY: setup test-deps build test demo bench fuzz soak clean install install-files
CARGO ?= cargo

setup:
	@scripts/setup.sh

# Both binaries: landscaped (no libtorch) and landscaped-worker (the TorchScript model worker).
build: setup
	$(CARGO) build --release --workspace

# Installs landscaped and its model worker side by side into $(PREFIX)/bin (landscaped finds the worker
# beside itself), the Python worker package into $(PREFIX)/share/landscaped/python (put on the Python
# worker's PYTHONPATH by landscaped), and the systemd units into $(PREFIX)/lib/systemd/system. The worker's RUNPATH is the
# canonical libtorch folder it was built against (the venv cache, outside the checkout), so the checkout
# may move or go; with LIBTORCH_COPY=1 torch's lib folder is copied to $(PREFIX)/lib/landscaped too,
# which the worker also searches ($ORIGIN/../lib/landscaped), for a machine without that cache (or a
# service user who can't read it).
# `make install-files BUILD=target/debug PREFIX=DIR` installs already-built binaries without building
# (tests/install.rs does this with the test build).
PREFIX ?= /usr/local
BUILD ?= target/release
install: build install-files

install-files:
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(PREFIX)/lib/systemd/system
	install -m 755 $(BUILD)/landscaped $(BUILD)/landscaped-worker $(DESTDIR)$(PREFIX)/bin/
	install -m 644 systemd/landscaped.service systemd/landscaped@.service $(DESTDIR)$(PREFIX)/lib/systemd/system/
	install -d $(DESTDIR)$(PREFIX)/share/landscaped/python/landscaped_worker
	install -m 644 python/landscaped_worker/*.py $(DESTDIR)$(PREFIX)/share/landscaped/python/landscaped_worker/
	@if [ "$(LIBTORCH_COPY)" = 1 ]; then \
	  install -d $(DESTDIR)$(PREFIX)/lib/landscaped && cp -a "$$(readlink -f .libtorch)/lib/." $(DESTDIR)$(PREFIX)/lib/landscaped/; \
	fi
	@echo "installed landscaped and landscaped-worker into $(DESTDIR)$(PREFIX)/bin"

# System packages the tests use (systemd-analyze, a real Prometheus + promtool, Open MPI's mpirun), from Debian.
test-deps:
	@scripts/ci-deps.sh

# The test command CI runs (.ci/run, with CI=true: a test whose scenario needs a capability this machine
# lacks fails there instead of skipping): formatting, lints as errors (Rust, then Python with ruff, pinned
# in python/requirements.txt and configured in ruff.toml), the fuzz targets compiled (their crate is
# outside the workspace, in its own target folder), then every test.
test: setup test-deps
	$(CARGO) fmt --all --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	.venv/bin/ruff format --check
	.venv/bin/ruff check
	$(CARGO) check --manifest-path fuzz/Cargo.toml --bins --target-dir fuzz/target/check
	$(CARGO) build --workspace
	$(CARGO) test --workspace --all-targets

# The main job on the built-in demo: trains small runs, ingests them, prints tables, writes plots.
demo: build
	@scripts/demo.sh

# Every benchmark, each printing ratios against its baseline run in the same invocation (not part of
# `make test`): ingest (bench.sh; vs cat and three plain-Python ways, whole-load f64 and mmap per tensor
# f64/f32), daemon, /healthz under idle connections, the footprint (light: idle RSS, `runs`, worker
# start-up, cost to a trainer, each vs a Python baseline), trajectory PCA (vs scikit-learn's default solver
# and "full"), slices, sharpness (Lanczos by its own stopping rule vs the real PyHessian at its defaults),
# the Python worker (vs an independent bare PyTorch HVP loop and the TorchScript worker), scale-out (1, 2, 4
# workers over TCP), optimizer-state ingest (vs cat of the same file, and peak RSS), the daemon's peak memory per checkpoint fed (memory: sparse 2^40 claim, 1 and 8 GiB in
# f32 and bf16; peak/idle and size/peak ratios), TensorBoard events per checkpoint (vs its ingest; goal < 1 %), stability (HVPs and seconds per checkpoint with
# vs without the warm start, critical sharpness forward passes, full-batch Adam at 38/η), layer spectra (spectra: per-matrix time vs
# torch.linalg.svdvals f64/f32, a GPT-2-small checkpoint vs WeightWatcher's analyze()).
# `make bench BENCH=pca` runs one.
BENCH ?= all
bench: build
	@if [ "$(BENCH)" = all ] || [ "$(BENCH)" = ingest ]; then scripts/bench.sh; fi
	@for b in daemon healthz light memory pca slice sharpness python scale tensorboard stability optimizer spectra; do \
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
