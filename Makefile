# make train : a short SAC training run in the MuJoCo twin (creates .venv if missing)
# make test  : the test suite (creates .venv if missing)
# make bench : the learning-curve benchmark (long)
VENV  ?= .venv
PY    := $(VENV)/bin/python
# The torch build to install. This pin is a CPU wheel on the project's machines; on a GPU
# machine install your own build first (it is kept), e.g. TORCH="torch==2.13.0".
TORCH ?= torch==2.13.0
STEPS ?= 30000

.PHONY: install train test bench lint

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q "$(TORCH)"
	$(PY) -m pip install -q -e ".[dev]"
	touch $@

train: install
	MUJOCO_GL=$${MUJOCO_GL:-egl} $(VENV)/bin/mbpo-arm train --backend mujoco trainer.total_steps=$(STEPS)

test: install
	$(VENV)/bin/ruff check .
	MUJOCO_GL=$${MUJOCO_GL:-egl} $(VENV)/bin/pytest tests

lint: install
	$(VENV)/bin/ruff check .

bench: install
	$(PY) bench/learning_curve.py
