# fedseg developer entry points. `make demo` and `make test` are the README's two commands.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
export FEDSEG_CACHE ?= $(CURDIR)/.cache/fedseg
export FLWR_TELEMETRY_ENABLED := 0
TORCH := torch==2.13.0

.PHONY: venv demo test test-fast lint offline-bundle bench bench-inference bench-fets bench-synthesis bench-monitoring clean

# torch first (CPU wheel), then the rest; fail loudly if anything moved torch.
$(BIN)/.installed: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q $(TORCH)
	$(BIN)/pip install -q -e '.[dev,openvino,intake,privacy,simulation]'
	@$(BIN)/python -c "import torch, sys; v = torch.__version__.split('+')[0]; \
	  sys.exit(0 if v == '2.13.0' else f'torch was changed to {torch.__version__}; pin torch==2.13.0')"
	touch $@

venv: $(BIN)/.installed

# Each demo gets a new folder, so a second `make demo` never clobbers the first.
demo: venv
	$(BIN)/fedseg demo --out demo/$$(date +%Y%m%d-%H%M%S)

# One pytest process, three workers on the two cores: the engine tests spend much of their
# time waiting on Flower's polls (a clean-clone run with two workers used 71 % of the two
# cores: 81 CPU-minutes in 57 minutes). --dist loadgroup keeps together what
# tests/conftest.py's XDIST_GROUPS names: the tests that run the Flower engine in real
# processes (one at a time), the export tests (one trained model and its exports), modules
# with module-scoped fixtures; every other test goes to whichever worker is free.
# The export tests used to need their own process (a SIGSEGV blamed on OpenVINO's thread
# pool + DataLoader forks); it does not reproduce with the pinned versions (see git log).
PYTEST_N := $(BIN)/python -m pytest -q -n 4 --dist loadgroup
test: venv
	$(PYTEST_N)

test-fast: venv
	$(PYTEST_N) -m "not slow"

lint: venv
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

# Every wheel the site, coordinator and user roles need, the atlas and install.sh, for
# machines without a network (README: Deploying across machines).
offline-bundle: venv
	$(BIN)/fedseg offline-bundle offline-bundle --roles site,coordinator,user

# Step time fp32 vs bf16 (fp16 on CUDA), contiguous vs channels-last, CPU preset and FeTS
# 128^3 (the FeTS rows take minutes per step on a 2-core CPU); case cache cold vs warm; the
# aggregator's fold of 10 FeTS-size updates; float16 vs float32 transfer; a small federation;
# the DP-SGD step against the plain one (tiny and FeTS width at 32^3).
bench: venv
	$(BIN)/python benchmarks/train_step.py
	$(BIN)/python benchmarks/train_step.py --loss-check 30
	$(BIN)/python benchmarks/case_cache.py
	$(BIN)/python benchmarks/aggregation.py
	$(BIN)/python benchmarks/transfer_dtype.py
	$(BIN)/python benchmarks/federation.py
	$(BIN)/python benchmarks/dp_sgd.py

# PyTorch FP32 vs OpenVINO FP32 vs INT8 on full 240x240x155 synthetic cases, FeTS-size
# network (about 15 min on 2 cores, synthesis and exports included).
bench-inference: venv
	test -d .bench/full/site1 || $(BIN)/fedseg data synth .bench/full --sites 1 --cases-per-site 5 --spacing 1 --seed 7
	$(BIN)/python benchmarks/inference.py --cases .bench/full/site1 --max-cases 1 --repeats 2 --work .bench/inference

# Issue 13's end-to-end number: 3 sites train the FeTS network (30 filters, depth 4) for 2
# rounds on 2 mm synthetic cases with 64^3 patches, with and without model retention
# (tens of minutes per run on a 2-core CPU; run it on a quiet machine).
bench-fets: venv
	$(BIN)/python benchmarks/fets_federation.py --keep .bench/fets-federation

# Issue 15's Tables I and II (ModalityBank): 4 synthetic sites at 4 mm (site4 held out),
# segmentation rows at the same optimizer-step budget, two generator federations, image
# quality of completions and samples, fig_samples.png / fig_completion.png in .bench/synthesis
# (about 1.5 h on 2 cores; BENCH_SYNTHESIS_ARGS=--quick runs every row in under 20 min).
bench-synthesis: venv
	$(BIN)/python benchmarks/synthesis.py --out .bench/synthesis $(BENCH_SYNTHESIS_ARGS)

# Can a coordinator trust the alarms? 20 five-site federations (clean, hard, other scanner,
# 2 validation cases, mislabeled in odd seeds), 8 rounds each, 2 at once: about 2 h on 2
# cores. Kept in .bench/monitoring; `--replay` rescores them in seconds.
bench-monitoring: venv
	$(BIN)/python benchmarks/monitoring.py --seeds 0-19 --workers 2 --keep .bench/monitoring $(BENCH_MONITORING_ARGS)

clean:
	rm -rf $(VENV) .cache demo .bench
