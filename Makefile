# Two entry points for a fresh machine (python3 >= 3.11 and make): `make run` and `make test`.
# Both create .venv and install what they need; nothing is assumed to be installed globally.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
# `make run` needs only the runtime and the NATS binary; `make test` adds the dev tools (a superset).
RUN_STAMP := $(VENV)/.installed-run
# mypy and lint-imports cannot follow setuptools' editable import hook, so they read a tree of links that
# mirrors the installed layout: contrast -> shared/, contrast.<service> -> services/<service>/.
TYPETREE := build/typecheck

.PHONY: run test lint typecheck pytest bench fuzz clean tools system-packages $(TYPETREE)

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

# The layers contract (pyproject.toml, [tool.importlinter]) is checked on the same tree of links as mypy.
lint: $(STAMP) $(TYPETREE)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	cd $(TYPETREE) && $(CURDIR)/$(VENV)/bin/lint-imports $(CURDIR)/pyproject.toml --no-cache

$(TYPETREE):
	rm -rf $(TYPETREE) && mkdir -p $(TYPETREE)/contrast
	for f in shared/*; do ln -s "$(CURDIR)/$$f" $(TYPETREE)/contrast/; done
	for d in services/*/; do d=$${d%/}; ln -s "$(CURDIR)/$$d" $(TYPETREE)/contrast/$${d#services/}; done

typecheck: $(STAMP) $(TYPETREE)
	cd $(TYPETREE) && $(CURDIR)/$(VENV)/bin/mypy --config-file $(CURDIR)/pyproject.toml -p contrast

# Four workers on two cores: the suite mostly waits (on nats-server, service processes, timeouts), so it runs in
# about half the time of one worker. PYTEST_WORKERS=0 runs it in this process.
PYTEST_WORKERS ?= 4
pytest: $(STAMP)
	$(VENV)/bin/pytest -q -n $(PYTEST_WORKERS)

bench: $(STAMP)
	for b in bench/*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

# Real tools that tests check our output against, built from the Go module proxy at pinned versions into a
# git-ignored folder (once; a version bump rebuilds). Tests that need one are skipped, with the reason, when it
# is absent; `.ci/run` builds them first and sets CONTRAST_REQUIRE_TOOLS=1, which turns such a skip into a failure.
TOOLS           ?= $(CURDIR)/.tools
OPA_VERSION     := v1.22.4
JAEGER_VERSION  := v1.75.0
NATSCLI_VERSION := v0.5.0
GO              ?= go

tools: $(TOOLS)/bin/opa.$(OPA_VERSION) $(TOOLS)/bin/jaeger.$(JAEGER_VERSION) $(TOOLS)/bin/nats.$(NATSCLI_VERSION)

$(TOOLS)/bin/opa.$(OPA_VERSION):
	GOBIN=$(TOOLS)/bin $(GO) install github.com/open-policy-agent/opa@$(OPA_VERSION)
	touch $@

# Jaeger's go.mod has a replace directive, which `go install pkg@version` refuses: build inside the module.
$(TOOLS)/bin/jaeger.$(JAEGER_VERSION):
	dir=$$($(GO) mod download -json github.com/jaegertracing/jaeger@$(JAEGER_VERSION) \
	  | $(PYTHON) -c 'import json, sys; print(json.load(sys.stdin)["Dir"])') \
	  && cd "$$dir" && $(GO) build -o $(TOOLS)/bin/jaeger ./cmd/jaeger
	touch $@

# `make run ARGS=--jaeger` builds the pinned Jaeger first (once).
run: $(if $(findstring --jaeger,$(ARGS)),$(TOOLS)/bin/jaeger.$(JAEGER_VERSION))

$(TOOLS)/bin/nats.$(NATSCLI_VERSION):
	GOBIN=$(TOOLS)/bin $(GO) install github.com/nats-io/natscli/nats@$(NATSCLI_VERSION)
	touch $@

# Debian packages the tool tests use: promtool (prometheus), stunnel (the mesh benchmark), iptables and
# iproute2 (network-namespace tests). Needs root and apt; CI machines have both.
system-packages:
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
	  prometheus stunnel4 iptables iproute2 nftables >/dev/null

clean:
	rm -rf $(VENV) build .run .mypy_cache .ruff_cache .pytest_cache *.egg-info
