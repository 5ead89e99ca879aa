# The README's two commands: `make demo` and `make test`. Each builds its own environment.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# A CPU build of torch is enough for everything here; set TORCH= to keep the torch you have.
TORCH ?= torch==2.13.0

.PHONY: demo test test-slow lint docs bench bench-checkpoint bench-distributed clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet $(TORCH)
	$(BIN)/python -m pip install --quiet -e ".[dev,demo]"
	touch $@

demo: $(VENV)/.installed
	$(BIN)/python examples/digits_cnn.py

lint: $(VENV)/.installed
	$(BIN)/ruff check src tests bench examples
	$(BIN)/ruff format --check src tests bench examples
	$(BIN)/mypy

test: lint
	$(BIN)/python -m pytest

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

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache site
