# Two entry points for a fresh machine (python3 >= 3.11 and make): `make run` and `make test`.
# Both create .venv and install what they need; nothing is assumed to be installed globally.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
# `make run` needs only the runtime and the NATS binary; `make test` adds the dev tools (a superset).
RUN_STAMP := $(VENV)/.installed-run
# mypy cannot follow setuptools' editable import hook, so it reads a tree of links that mirrors the
# installed layout: contrast -> shared/, contrast.<service> -> services/<service>/.
TYPETREE := build/typecheck

.PHONY: run test lint typecheck pytest bench fuzz clean

$(VENV)/bin/python:
	$(PYTHON) -c 'import sys; sys.exit("python >= 3.11 is required") if sys.version_info < (3, 11) else None'
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

$(STAMP): pyproject.toml setup.py | $(VENV)/bin/python
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP) $(RUN_STAMP)

$(RUN_STAMP): pyproject.toml setup.py | $(VENV)/bin/python
	$(PY) -m pip install --quiet -e '.[local]'
	touch $(RUN_STAMP)

run: $(RUN_STAMP)
	$(VENV)/bin/contrast run $(ARGS)

test: lint typecheck pytest

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: $(STAMP)
	rm -rf $(TYPETREE) && mkdir -p $(TYPETREE)/contrast
	for f in shared/*; do ln -s "$(CURDIR)/$$f" $(TYPETREE)/contrast/; done
	for d in services/*/; do d=$${d%/}; ln -s "$(CURDIR)/$$d" $(TYPETREE)/contrast/$${d#services/}; done
	cd $(TYPETREE) && $(CURDIR)/$(VENV)/bin/mypy --config-file $(CURDIR)/pyproject.toml -p contrast

pytest: $(STAMP)
	$(VENV)/bin/pytest -q

bench: $(STAMP)
	for b in bench/*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

clean:
	rm -rf $(VENV) build .run .mypy_cache .ruff_cache .pytest_cache *.egg-info
