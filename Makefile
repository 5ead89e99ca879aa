# The README's two commands: `make demo` and `make test`. Each builds its own environment.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# A CPU build of torch is enough for everything here; TORCH= leaves the choice to pip (kiln's
# own dependency, torch>=2.1).
TORCH ?= torch==2.13.0

.PHONY: demo test test-slow lint docs bench bench-checkpoint bench-distributed bench-tables clean

# pip runs quietly; the echo lines say what each step is and how long it takes, so that the
# first run (minutes, mostly torch's download) is not taken for a hang.
$(VENV)/.installed: pyproject.toml
	@echo "Setting up $(VENV), once (later runs reuse it): a Python environment with torch and kiln."
	$(PYTHON) -m venv $(VENV)
ifneq ($(strip $(TORCH)),)
	@echo "Installing $(TORCH): a large download (hundreds of MB; a few GB on Linux, where pip's"
	@echo "torch brings CUDA libraries). This takes a few minutes the first time, without output."
	$(BIN)/python -m pip install --quiet $(TORCH)
	@echo "Installing kiln with its test and demo tools (about a minute)..."
else
	@echo "Installing kiln with its test and demo tools, and torch as a dependency (a large"
	@echo "download: a few minutes the first time, without output)..."
endif
	$(BIN)/python -m pip install --quiet -e ".[dev,demo]"
	@echo "$(VENV) is ready."
	touch $@

demo: $(VENV)/.installed
	$(BIN)/python examples/digits_cnn.py

lint: $(VENV)/.installed
	$(BIN)/ruff check src tests bench examples conftest.py
	$(BIN)/ruff format --check src tests bench examples conftest.py
	$(BIN)/mypy

# The suite on every core, up to 4 (pytest-xdist); WORKERS=0 runs it in this process.
WORKERS ?= auto

test: lint
	$(BIN)/python -m pytest -n $(WORKERS) --maxprocesses 4

test-slow: $(VENV)/.installed
	$(BIN)/python -m pytest -m slow

# The documentation site (mkdocs.yml, docs/), built offline in strict mode: warnings are errors.
docs: $(VENV)/.installed
	$(BIN)/python -m pip install --quiet -e ".[docs]"
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --site-dir site

bench: $(VENV)/.installed
	$(BIN)/python bench/overhead.py

bench-checkpoint: $(VENV)/.installed
	$(BIN)/python bench/checkpoint.py

bench-distributed: $(VENV)/.installed
	$(BIN)/python bench/distributed.py

# kiln fit against LightGBM, XGBoost, CatBoost, HistGradientBoosting, RealMLP-TD and a linear
# model on the development tables; the contenders are benchmark dependencies, not kiln's.
bench-tables: $(VENV)/.installed
	$(BIN)/python -m pip install --quiet -r bench/requirements-tables.txt
	$(BIN)/python bench/tables.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache site
