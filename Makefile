# duda_d2 -- set-up, tests and demo. Every target creates or updates .venv/ first.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.duda_installed

.PHONY: venv test demo detectron2-from-source clean-venv

venv: $(STAMP)

# Re-run only when a dependency list or the installer changed: a second `make test` costs seconds.
# tools/install_detectron2.py adds Detectron2 and panopticapi, hash-pinned wheels installed
# without their dependencies (their metadata pins numpy<2; requirements.txt keeps numpy 2).
$(STAMP): requirements.txt requirements-dev.txt setup.py tools/install_detectron2.py
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(PY) -m pip install --quiet --disable-pip-version-check --upgrade pip
	@echo "installing requirements into $(VENV) (first time: a few minutes)"
	@$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt -r requirements-dev.txt
	@$(PY) tools/install_detectron2.py
	@$(PY) -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	@touch $@

# pytest exits 5 when it collected no tests: that is a failure too (make fails on any non-zero).
test: $(STAMP)
	@$(PY) -m pytest -q tests; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "error: pytest collected no tests" >&2; fi; exit $$rc

# DUDA on the synthetic benchmark on the CPU: prepares data, trains, prints mIoU, saves a picture.
demo: $(STAMP)
	$(PY) tools/run_demo.py

detectron2-from-source: $(STAMP)
	$(PY) tools/install_detectron2.py --from-source

clean-venv:
	rm -rf $(VENV)
