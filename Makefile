# make train     : a short SAC training run in the MuJoCo twin (creates .venv if missing)
# make test      : ruff, the whole test suite and the docs build (what CI runs)
# make test-fast : the tests not marked slow, for the edit-test loop (under a minute)
# make docs      : the documentation site (MkDocs, warnings are errors) into site/
# make bench     : the learning-curve benchmark (long)
VENV  ?= .venv
PY    := $(VENV)/bin/python
# The torch build to install. This pin is a CPU wheel on the project's machines; on a GPU
# machine install your own build first (it is kept), e.g. TORCH="torch==2.13.0".
TORCH ?= torch==2.13.0
STEPS ?= 12000
GL    := MUJOCO_GL=$${MUJOCO_GL:-egl}

.PHONY: install train test test-fast docs bench lint

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip || echo "make: upgrading pip failed; going on with the venv's pip"
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q "$(TORCH)"
	$(PY) -m pip install -q -e ".[dev,docs,ray]"
	touch $@

train: install
	$(GL) $(VENV)/bin/mbpo-arm train --backend mujoco threads=auto trainer.total_steps=$(STEPS)

test: install
	$(VENV)/bin/ruff check .
	$(GL) $(VENV)/bin/pytest tests
	$(MAKE) docs

test-fast: install
	$(GL) $(VENV)/bin/pytest tests -m "not slow"

docs: install
	$(VENV)/bin/mkdocs build --strict --site-dir site

lint: install
	$(VENV)/bin/ruff check .

bench: install
	$(PY) bench/learning_curve.py
