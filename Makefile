# Two commands on a fresh machine: `make demo` and `make test`. Each creates .venv,
# installs what it needs (again only when pyproject.toml changes) and runs.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)
# Forward mode runs on mitmproxy 11.0.x (Python 3.11), whose pins (h11<=0.14,
# cryptography<44.1, ruamel.yaml<=0.18.6) the test clients cannot share: the openai SDK's
# httpx2 needs h11>=0.16. It gets an environment of its own; the forward-mode tests start
# the firewall from it ($(MITM_VENV)/bin/agent-firewall) and drive it from $(VENV).
MITM_VENV  := .venv-mitm
MITM_STAMP := $(MITM_VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)

.PHONY: install install-mitm demo test check bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet 'torch==2.13.0'
	$(BIN)/python -m pip install --quiet -e '.[test,detoxify,semantic,redis]'
	rm -f $(VENV)/.installed-*
	touch $@

install: $(STAMP)

$(MITM_VENV)/bin/python:
	$(PYTHON) -m venv $(MITM_VENV)

$(MITM_STAMP): pyproject.toml | $(MITM_VENV)/bin/python
	$(MITM_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(MITM_VENV)/bin/python -m pip install --quiet -e '.[mitm,redis]'
	$(MITM_VENV)/bin/python -m pip check
	rm -f $(MITM_VENV)/.installed-*
	touch $@

install-mitm: $(MITM_STAMP)

demo: install
	$(BIN)/agent-firewall demo --audit-log demo-audit.jsonl

check: install
	$(BIN)/agent-firewall check policies/*.yaml
	$(BIN)/agent-firewall test policies/*.yaml

test: check install-mitm
	$(BIN)/ruff check firewall tests benchmarks training
	AGENT_FIREWALL_MITM=$(MITM_VENV)/bin/agent-firewall $(BIN)/python -m pytest -q

bench: install
	$(BIN)/python benchmarks/bench_proxy.py --write benchmarks/RESULTS.md
	$(BIN)/python benchmarks/bench_stream.py --write benchmarks/RESULTS.md
	$(BIN)/python benchmarks/detection/run.py --write benchmarks/RESULTS.md
	$(BIN)/python benchmarks/bench_semantic.py --write benchmarks/RESULTS.md
	$(BIN)/python benchmarks/bench_agents.py --write benchmarks/RESULTS.md
	$(BIN)/python benchmarks/lineage_recall.py --write benchmarks/RESULTS.md
	$(BIN)/python benchmarks/bench_audit_index.py --write benchmarks/RESULTS.md
	$(BIN)/python benchmarks/bench_soak.py --write benchmarks/RESULTS.md

clean:
	rm -rf $(VENV) $(MITM_VENV) demo-audit.jsonl .pytest_cache
