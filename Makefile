# Two commands on a fresh machine: `make demo` (the main job, offline) and `make test`;
# `make test-live` also installs doccano and Label Studio and tests the annotation loop against them.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
INSTALLED := $(VENV)/.installed
DEMO := demo_out
# Let Python cache compiled modules in .venv even where the environment sets PYTHONDONTWRITEBYTECODE:
# without the cache every new process the tests start compiles Paddle and the rest from source again
export PYTHONDONTWRITEBYTECODE :=

# One venv per annotation tool (their Django versions conflict), each synced to its lock
TOOL_VENVS := .venv-doccano .venv-labelstudio

.PHONY: venv demo test test-fast test-live clean

# The lock is installed with uv (its version pinned in requirements.txt), which downloads in parallel;
# `pip install -r requirements.txt` installs the same packages (README). Neither byte-compiles every
# installed file (all of Paddle's): Python compiles the modules a run imports on first use instead.
# editable_mode=compat puts the checkout itself on sys.path, so a script run from retrieval_based/ (whose
# utils/ directory is the reference's) still imports the suite's utils.py, not that directory
$(INSTALLED): requirements.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --disable-pip-version-check --no-compile $$(grep '^uv==' requirements.txt)
	$(VENV)/bin/uv pip install --python $(PY) -r requirements.txt
	$(VENV)/bin/uv pip install --python $(PY) --no-deps --no-build-isolation -e . -C editable_mode=compat
	touch $(INSTALLED)

venv: $(INSTALLED)

# scratch model built from data/ -> train.py -> predict.py -> export_model.py -> deploy/predictor/infer.py,
# all on CPU, no network needed
demo: $(INSTALLED)
	$(PY) scratch_model.py --dataset_dir data --output_dir $(DEMO)/scratch_model --preset tiny
	$(PY) train.py --device cpu --dataset_dir data --model_name $(DEMO)/scratch_model --save_dir $(DEMO)/checkpoint \
		--batch_size 16 --learning_rate 1e-3 --warmup --warmup_steps 30 --epochs 20 --early_stop --tune_thresholds
	$(PY) predict.py --device cpu --dataset_dir data --params_path $(DEMO)/checkpoint --output_file $(DEMO)/output.txt
	$(PY) export_model.py --params_path $(DEMO)/checkpoint --output_path $(DEMO)/export --dataset_dir data
	$(PY) deploy/predictor/infer.py --device cpu --model_path_prefix $(DEMO)/export/float32 --dataset_dir data \
		--output_file $(DEMO)/infer_output.txt
	@echo "Demo finished. Scratch model: $(DEMO)/scratch_model/  trained checkpoint (with labels and thresholds): $(DEMO)/checkpoint/  predictions for data/data.txt: $(DEMO)/output.txt  deployable export: $(DEMO)/export/  its ONNX Runtime predictions: $(DEMO)/infer_output.txt"

# three workers on two cores: a serial run leaves a core idle, and many tests wait for a server or a
# launched process; each worker takes its share of Paddle's threads, each test file stays on one worker
# (its module fixtures are built once), the longest files are handed out first, and the first worker
# that needs a model fixture builds it for all (tests/conftest.py)
test: $(INSTALLED)
	$(PY) -m ruff check .
	$(PY) -m pytest -n 3 --dist loadfile --no-loadscope-reorder

# lint and the unit and in-process tests: nothing trains a model, starts a server or a new interpreter
test-fast: $(INSTALLED)
	$(PY) -m ruff check .
	$(PY) -m pytest -m "not slow and not live"

# `uv pip sync` makes a tool's venv exactly its lock (about 1.3 GB for both, installed once); the live tests
# start each tool offline on a free port with its data in a temporary directory (tests/live/tools.py), copied
# from the migrated database kept in live-template/ (rebuilt after a sync)
.venv-%/.installed: requirements-%.txt $(INSTALLED)
	test -x .venv-$*/bin/python || $(PYTHON) -m venv .venv-$*
	$(VENV)/bin/uv pip sync --python .venv-$*/bin/python requirements-$*.txt
	rm -rf .venv-$*/live-template
	touch $@

test-live: $(INSTALLED) $(TOOL_VENVS:%=%/.installed)
	$(PY) -m pytest -m live tests/live

clean:
	rm -rf $(DEMO) .pytest_cache
