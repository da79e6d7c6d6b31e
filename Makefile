# duda_d2 -- set-up, tests and demo. Every target creates or updates .venv/ first.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.duda_installed

.PHONY: venv test demo detectron2-from-source clean-venv

venv: $(STAMP)

# Re-run only when a dependency list or the installer changed: a second `make test` costs seconds.
$(STAMP): requirements.txt requirements-dev.txt setup.py tools/install_detectron2.py
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(PY) -m pip install --quiet --disable-pip-version-check --upgrade pip
	@echo "installing requirements into $(VENV) (first time: a few minutes)"
	@$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt -r requirements-dev.txt
	@$(PY) tools/install_detectron2.py
	@$(PY) -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	@touch $@

test: $(STAMP)
	$(PY) -m pytest -q tests

demo: $(STAMP)
	$(PY) tools/run_demo.py

detectron2-from-source: $(STAMP)
	$(PY) tools/install_detectron2.py --from-source

clean-venv:
	rm -rf $(VENV)
