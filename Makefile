# dps-map: `make demo` runs the demo, `make test` runs the whole test suite (both install first).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: gpu-check gpu-wheels lint check-results rehearse-paper train-adapter-paper train-adapter-paper-sd2 compare-prior tune-tiny reproduce-paper-sd2 preflight-paper-sd2 install demo test test-fast preflight-paper mutants train-tiny-prior gmm-study frontier dps-regime sweep clean train-adapter train-tiny-reference adapter-ablation reproduce-paper-small reproduce-paper bench bench-quick install-bench

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev,latent]'
	touch $(STAMP)

demo: install
	$(PY) -m dps_map.demo

# the tests run on every core (pytest-xdist; at most 4 workers: each holds ~1 GB, and past a few cores the longest
# files bound the time), whole files per worker in tests/conftest.py's order (the longest first; a file's
# module-scoped fixtures built once). TEST_WORKERS=0: one process, as plain `pytest` (tests/mutants.py's way).
# Measured: 17 min on 2 nearly idle CPU cores (experiments/results/test_suite.txt, docs/testing.md).
TEST_WORKERS ?= auto
PYTEST_XDIST := $(if $(filter 0,$(TEST_WORKERS)),,-n $(TEST_WORKERS) --maxprocesses=4 --dist loadfile --no-loadscope-reorder)

test: install   # everything, the slow tests included (what CI runs)
	$(PY) -m pytest -q $(PYTEST_XDIST) --durations=20

test-fast: install   # everything but the tests marked slow (the real-size 512 network, the rehearsal, ...)
	$(PY) -m pytest -q $(PYTEST_XDIST) -m "not slow"

# performance (docs/performance.md): `make bench` also installs the optional `bench` extra (deepinv,
# the peer DPS) without touching the torch pins; `make bench-quick` takes < 1 minute on 2 CPU cores
BENCH_STAMP := $(VENV)/.installed-bench

install-bench: $(BENCH_STAMP)

$(BENCH_STAMP): $(STAMP)
	$(PY) -m pip install --quiet -e '.[dev,latent,bench]'
	touch $(BENCH_STAMP)

bench: install-bench
	$(PY) -m dps_map.bench $(BENCH_ARGS)

bench-quick: install-bench
	OMP_NUM_THREADS=1 $(PY) -m dps_map.bench quick=true $(BENCH_ARGS)

# -- the GPU check (docs/performance.md "GPU check") ---------------------------------------------------------
# `make gpu-check` runs python -m dps_map.gpu_check on .venv's python where there is one, else on python3 with
# its own torch (a GPU machine's: nothing is installed over it, and `install` is not a prerequisite). Where
# hydra & co. are missing it installs the wheels of `make gpu-wheels` (copy .gpu-wheels/ along) into .gpu-site/,
# without an index or dependencies (a Python without pip unzips them: a pure-Python wheel is an importable tree).
# SMOKE=1: every part at toy size on whatever device is present.
GPU_PYTHON ?= $(if $(wildcard $(PY)),$(PY),$(PYTHON))
GPU_WHEELS := .gpu-wheels
GPU_SITE := .gpu-site
# the versions .venv has (pip freeze); all pure Python, so the py3-none-any wheels install on any CPython 3
GPU_WHEEL_SPECS := hydra-core==1.3.8 omegaconf==2.3.1 antlr4-python3-runtime==4.9.3 hydra-submitit-launcher==1.2.0 \
	submitit==1.5.4 cloudpickle==3.1.3 guided-diffusion-sdk==1.0.0 lpips==0.1.4 pytorch-fid==0.3.0 diffusers==0.42.1 \
	resize-right==0.0.2
# diffusers imports requests (and checks its metadata), which a machine whose huggingface-hub uses httpx may lack;
# charset-normalizer (its pure-Python wheel) only spares requests' warning
GPU_WHEEL_REQUESTS := requests==2.34.2 urllib3==2.8.0 idna==3.21 certifi==2026.10.19.post1
GPU_IMPORTS := hydra, omegaconf, antlr4, submitit, cloudpickle, hydra_plugins.hydra_submitit_launcher, \
	guided_diffusion, lpips, pytorch_fid, diffusers, resize_right

gpu-wheels:   # on a machine with PyPI: the packages a bare GPU machine (torch, no network) lacks, as wheels
	$(GPU_PYTHON) -m pip wheel --quiet --no-deps -w $(GPU_WHEELS) $(GPU_WHEEL_SPECS) $(GPU_WHEEL_REQUESTS)
	$(GPU_PYTHON) -m pip download --quiet --no-deps --only-binary=:all: --platform any --implementation py \
		--python-version 3.12 -d $(GPU_WHEELS) charset-normalizer==3.5.3
	@ls -l $(GPU_WHEELS)/*.whl && du -sh $(GPU_WHEELS)

gpu-check:   # what to trust before a GPU sweep, ~8 min on one H100; report in outputs/gpu_check/
	@PYTHONPATH=$(GPU_SITE) $(GPU_PYTHON) -c "import $(GPU_IMPORTS)" 2>/dev/null || { \
		ls $(GPU_WHEELS)/*.whl >/dev/null 2>&1 || { echo "gpu-check: hydra & co. are missing and \
$(GPU_WHEELS)/ is empty: run make gpu-wheels where PyPI is reachable, then copy $(GPU_WHEELS)/ here" >&2; exit 2; }; \
		echo "gpu-check: installing $(GPU_WHEELS)/*.whl into $(GPU_SITE)/"; \
		$(GPU_PYTHON) -m pip install --quiet --no-deps --no-index --upgrade --target $(GPU_SITE) $(GPU_WHEELS)/*.whl \
		|| for w in $(GPU_WHEELS)/*.whl; do $(GPU_PYTHON) -m zipfile -e $$w $(GPU_SITE) || exit 2; done; }
	PYTHONPATH=.:$(GPU_SITE)$${PYTHONPATH:+:$$PYTHONPATH} $(GPU_PYTHON) -m dps_map.gpu_check \
		$(if $(filter 1 true yes,$(SMOKE)),--smoke) $(GPU_CHECK_ARGS)

train-tiny-prior: install
	$(PY) -m dps_map.train_prior

compare-prior: install   # a retrained tiny prior vs the shipped one: CANDIDATE=path/tiny_prior.pt (--restore: ~15 min more)
	OMP_NUM_THREADS=1 $(PY) -m tools.compare_priors --candidate $(CANDIDATE) $(ARGS)

tune-tiny: install   # DPS/DMAP/DMAP-Adam step sizes for the tiny prior on 12 validation crops; experiments/results/tune_tiny.*
# (89 min with --workers 1 at load ~3 on 2 CPU cores, its provenance record; by default one worker per core)
	OMP_NUM_THREADS=1 $(PY) -m tools.tune_tiny $(ARGS)
gmm-study: install
	$(PY) -m experiments.gmm_sampler_study

# cost-quality frontier, GMM then tiny prior (2 demo crops, Hydra multiruns); experiments/results/frontier_{gmm,tiny}.*:
# GMM 7.7 min, tiny 73 min with --workers 1 at load ~3-4.5 on 2 CPU cores (their provenance records; by default one
# multirun per core at a time)
frontier: install
	OMP_NUM_THREADS=1 $(PY) -m experiments.frontier gmm
	OMP_NUM_THREADS=1 $(PY) -m experiments.frontier tiny

dps-regime: install   # DPS vs the exact GMM posterior over d x zeta x m; experiments/results/dps_regime.*
	OMP_NUM_THREADS=1 $(PY) -m experiments.dps_regime --zetas 0.01 0.1 0.3 1 3 --seeds 0 --num-samples 300

# -- sweeps (docs/sweeps.md): 2 samplers x 3 tasks x 2 shards on the tiny prior, then the aggregate ------
SWEEP_DIR ?= outputs/sweep
SWEEP_LAUNCHER ?= local
sweep: install   # a few minutes on 2 CPU cores; rerun to resume (finished samples are skipped)
	OMP_NUM_THREADS=1 $(PY) -m dps_map.run -m hydra/launcher=$(SWEEP_LAUNCHER) task=sr4,inpaint_box,gaussian_deblur \
		sampler=dps,dmap prior=tiny data=demo data.per_photo=2 num_samples=2 sampler.respacing=20 \
		data.num_shards=2 'data.shard=range(2)' progress=false hydra.sweep.dir=$(SWEEP_DIR) $(ARGS)
	$(PY) -m dps_map.aggregate $(SWEEP_DIR)

# -- conditional adapters (docs/adapters.md) ------------------------------------------------------------
ADAPTER_RECIPE := prior=tiny steps=1000 batch_size=8
ADAPTER_TASKS ?= sr4 inpaint_box
train-adapter: $(ADAPTER_TASKS:%=train-adapter-%)   # the shipped adapters, one per task (100 crops of the training photographs each); make -j2 trains them side by side
train-adapter-%: install
	OMP_NUM_THREADS=1 $(PY) -m dps_map.train_adapter $(ADAPTER_RECIPE) task=$* data.n_images=100 \
		export_path=dps_map/assets/adapters/$*_tiny.pt $(ARGS)
train-tiny-reference: install   # the tiny-scale reference conditional model (SR x4 SuperResModel, all training photos)
	OMP_NUM_THREADS=1 $(PY) -m dps_map.train_reference
adapter-ablation: install   # adapters on 25/50/100 crops, then their table
	for n in 25 50 100; do $(PY) -m dps_map.train_adapter $(ADAPTER_RECIPE) task=sr4 data.n_images=$$n || exit 1; done
	$(PY) -m experiments.adapter_ablation

# -- the paper's analysis (docs/paper.md "Reproducing the paper") ---------------------------------------
SMALL := outputs/paper_small
# GMM + tiny prior on this CPU; results in experiments/results/ (the steps' provenance records add up to 34 min at
# load 3-5 on 2 CPU cores, one thread each)
reproduce-paper-small: install
	$(PY) -m experiments.score_diagnostics gmm
	$(PY) -m experiments.score_diagnostics tiny
	$(PY) -m experiments.diversity gmm --work $(SMALL)/diversity
	$(PY) -m experiments.diversity tiny --work $(SMALL)/diversity
	$(PY) -m dps_map.run -m task=sr4,inpaint_box,gaussian_deblur sampler=dps,dsg,dmap prior=tiny data=demo \
		progress=false hydra.sweep.dir=$(SMALL)/restoration
	$(PY) -m dps_map.run -m task=sr4,inpaint_box sampler=adapter,adapter_dps,adapter_dmap prior=tiny data=demo \
		progress=false hydra.sweep.dir=$(SMALL)/restoration
	$(PY) -m dps_map.run -m task=sr4 sampler=ddpm prior=tiny_sr4_reference data=demo \
		progress=false hydra.sweep.dir=$(SMALL)/restoration
	$(PY) -m experiments.restoration_table $(SMALL)/restoration --name restoration_tiny

# Variables a user sets (docs/paper.md "Reproducing the paper"): ARGS = Hydra overrides for every step of a target
# (paths.*, prior.*, device, perf.*, data.max_images, ...; never a sweep: SHARDS is the one sharding knob),
# SCORE_ARGS = options of the score-diagnostics step only (--crops, --num, reference.*), LAUNCHER, SHARDS,
# PAPER / PAPER_SD2 = output folders. Checkpoints and data come from paths.* or the DPS_MAP_* variables.
PAPER ?= outputs/paper
LAUNCHER ?= gpus
# one shard per GPU (gpus launcher) or per SLURM task
SHARDS ?= 8
SHARDING := data.num_shards=$(SHARDS) 'data.shard=range($(SHARDS))'

# the sweeps of the paper (shared by reproduce-paper and preflight-paper)
PAPER_RESTORATION := +experiment=paper hydra/launcher=$(LAUNCHER) \
	task=sr4,sr8,gaussian_deblur,motion_deblur,inpaint_box sampler=dps,dsg,dmap $(SHARDING) hydra.sweep.dir=$(PAPER)/restoration
PAPER_ADAPTERS := +experiment=paper hydra/launcher=$(LAUNCHER) \
	task=sr4 sampler=adapter,adapter_dps,adapter_dmap $(SHARDING) hydra.sweep.dir=$(PAPER)/restoration
PAPER_DIVERSITY := +experiment=paper_diversity hydra/launcher=$(LAUNCHER) \
	task=sr4 sampler=dps,dmap,adapter,adapter_dmap $(SHARDING) hydra.sweep.dir=$(PAPER)/diversity
PAPER_SCORES := adm512 --crops 100 --out $(PAPER)/results
# the adm512 SR x4 adapter (the authors' recipe: 100 training images, AdamW lr 1e-5, weight decay 1e-2, effective
# batch 64, 5000 steps); class labels from <paths.train_images>/<wnid>/<file>
PAPER_TRAIN_ADAPTER := task=sr4 prior=adm512 data.kind=folder 'data.root=$${paths.train_images}' data.n_images=100 \
	batch_size=4 accumulate=16 steps=5000 lr=1e-5 weight_decay=1e-2 perf.precision=bf16 perf.grad_checkpoint=true \
	'export_path=$${paths.checkpoints}/adapters/sr4_adm512.pt' 'out_dir=$(PAPER)/train_adapter/sr4_adm512'

# after a command of a preflight: keep the worst exit status and go on, so every problem is reported at once
WORST := || { s=$$?; [ $$s -gt $$status ] && status=$$s; }

preflight-paper: install   # before the GPU run: check every job and file of reproduce-paper, time each configuration, project the GPU-hours
	@status=0; \
	$(PY) -m dps_map.preflight --out $(PAPER)/preflight/restoration -m $(PAPER_RESTORATION) $(ARGS) $(WORST); \
	$(PY) -m dps_map.preflight --out $(PAPER)/preflight/adapters -m $(PAPER_ADAPTERS) $(ARGS) $(WORST); \
	$(PY) -m dps_map.preflight --out $(PAPER)/preflight/diversity -m $(PAPER_DIVERSITY) $(ARGS) $(WORST); \
	$(PY) -m experiments.score_diagnostics $(PAPER_SCORES) --check $(PAPER)/preflight/score_diagnostics \
		$(ARGS) $(SCORE_ARGS) $(WORST); \
	exit $$status

train-adapter-paper: install   # the adapter reproduce-paper needs (GPU; the paper reports ~8 GPU-hours)
	$(PY) -m dps_map.train_adapter $(PAPER_TRAIN_ADAPTER) $(ARGS)

reproduce-paper: install   # the ADM-512 pixel setting (this project's; DPS2022's protocol) on GPUs (checkpoints and data from paths.*; docs/paper.md); needs make train-adapter-paper
	$(PY) -m dps_map.run -m $(PAPER_RESTORATION) $(ARGS)
	$(PY) -m dps_map.run -m $(PAPER_ADAPTERS) $(ARGS)
	$(PY) -m experiments.restoration_table $(PAPER)/restoration --out $(PAPER)/results --name restoration_adm512 \
		--title "Restoration, ADM-512 pixel setting (this project's; DPS2022's protocol), ImageNet val (noiseless, 1000 steps)"
	$(PY) -m dps_map.run -m $(PAPER_DIVERSITY) $(ARGS)
	$(PY) -m dps_map.aggregate $(PAPER)/diversity
	$(PY) -m experiments.score_diagnostics $(PAPER_SCORES) $(ARGS) $(SCORE_ARGS)

# -- the authors' published tables: the SD2-base latent setting (docs/latent.md) -----
# needs paths.sd2_base, paths.imagenet_val, the LPIPS/Inception weights and, for adapter_*, the ControlNet folders
# <paths.checkpoints>/adapters/<task>_sd2_base that make train-adapter-paper-sd2 writes (adapter_dps and
# adapter_dmap read the same folder, as main_sd2cn.py's --mode dps and --mode max take the same --cnmodel)
PAPER_SD2 ?= outputs/paper_sd2
# DMAP is the authors' --mode max (main_sd2.py:135-143; runs Record.md:489, 495) and adapter_dmap their --mode max on
# the ControlNet (main_sd2cn.py:149-158; Record.md:491, 497)
PAPER_SD2_SAMPLERS ?= dps,dmap,psld,freedom,dsg,adapter_dps,adapter_dmap
# motion_deblur: the authors' SD2 scripts build srx8, gdb, pr and nlb only (main_sd2.py:57-64, main_sd2cn.py:65-68);
# the row their paper publishes is run here with our motion kernel and their deblurring guidance (docs/latent.md)
PAPER_SD2_TASKS := sr8 gaussian_deblur motion_deblur
# the step sizes: the preset's tuned: table (conf/experiment/paper_sd2.yaml), each from a Record.md run
PAPER_SD2_SR := +experiment=paper_sd2 hydra/launcher=$(LAUNCHER) task=sr8 sampler=$(PAPER_SD2_SAMPLERS) \
	$(SHARDING) hydra.sweep.dir=$(PAPER_SD2)/restoration
PAPER_SD2_DEBLUR := +experiment=paper_sd2 hydra/launcher=$(LAUNCHER) task=gaussian_deblur,motion_deblur \
	sampler=$(PAPER_SD2_SAMPLERS) $(SHARDING) hydra.sweep.dir=$(PAPER_SD2)/restoration
# the authors' ControlNet recipe: 100 images, AdamW lr 1e-5, weight decay 1e-2, effective batch 64, 5000 steps,
# random resized crops (area 0.8-1: side 0.9-1), flips, colour jitter 0.1
PAPER_TRAIN_CONTROLNET := prior=sd2_base data.kind=folder 'data.root=$${paths.train_images}' data.n_images=100 \
	batch_size=8 accumulate=8 steps=5000 lr=1e-5 weight_decay=1e-2 warmup=0 lr_schedule=constant \
	'augment.crop_scale=[0.9,1.0]' augment.jitter=0.1

preflight-paper-sd2: install   # before the GPU run: check every job and file of reproduce-paper-sd2, time each configuration, project the GPU-hours
	@status=0; \
	$(PY) -m dps_map.preflight --out $(PAPER_SD2)/preflight/sr8 -m $(PAPER_SD2_SR) $(ARGS) $(WORST); \
	$(PY) -m dps_map.preflight --out $(PAPER_SD2)/preflight/deblur -m $(PAPER_SD2_DEBLUR) $(ARGS) $(WORST); \
	exit $$status

train-adapter-paper-sd2: $(PAPER_SD2_TASKS:%=train-adapter-paper-sd2-%)   # the three ControlNets adapter_dps and adapter_dmap need (GPU)
train-adapter-paper-sd2-%: install
	$(PY) -m dps_map.train_adapter task=$* $(PAPER_TRAIN_CONTROLNET) 'export_path=$${paths.checkpoints}/adapters/$*_sd2_base' \
		'out_dir=$(PAPER_SD2)/train_adapter/$*_sd2_base' $(ARGS)

reproduce-paper-sd2: install   # the authors' published tables (SD2-base latents); needs make train-adapter-paper-sd2 (or PAPER_SD2_SAMPLERS without adapter_*)
	$(PY) -m dps_map.run -m $(PAPER_SD2_SR) $(ARGS)
	$(PY) -m dps_map.run -m $(PAPER_SD2_DEBLUR) $(ARGS)
	$(PY) -m experiments.restoration_table $(PAPER_SD2)/restoration --out $(PAPER_SD2)/results --name restoration_sd2 \
		--title "Restoration, SD2-base latent setting (the authors' published tables), ImageNet val (noiseless, 500 steps)"

rehearse-paper: install   # the targets above run for real at toy scale on stand-in files (CPU, one core, minutes): tools/rehearse_paper.py
	OMP_NUM_THREADS=1 $(PY) -m tools.rehearse_paper $(ARGS)

# every published number traceable (docs/testing.md "Results and their provenance"): each file under
# experiments/results/ has its provenance record and the shipped assets' sha256, and every number README.md,
# docs/ and experiments/results/README.md quote from a run is in the file they cite; seconds, no network; CI runs it
lint: install   # ruff (pyproject.toml [tool.ruff]): pyflakes, statement errors, import order; seconds
	$(PY) -m ruff check dps_map experiments tools tests

check-results: install
	$(PY) -m tools.check_results $(ARGS)

clean:
	rm -rf outputs multirun .pytest_cache

# deliberate bugs, each in a temporary copy against the tests written for it (docs/testing.md "Checking the tests");
# 182 mutants in about 5 minutes on 2 CPU cores (179 of them: 317 s measured, nothing else running); CI runs it (.ci/run).
# One or more by name: make mutants ARGS="dsg_sign dmap_denoiser_at_t"
mutants: install
	OMP_NUM_THREADS=1 $(PY) tests/mutants.py $(ARGS)
