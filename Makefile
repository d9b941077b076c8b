# Two commands on a fresh machine: `make demo` and `make test`. Each creates .venv,
# installs what it needs (again only when pyproject.toml changes) and runs.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)

.PHONY: install demo test check bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet 'torch==2.13.0'
	$(BIN)/python -m pip install --quiet -e '.[test,detoxify,semantic,redis]'
	rm -f $(VENV)/.installed-*
	touch $@

install: $(STAMP)

demo: install
	$(BIN)/agent-firewall demo --audit-log demo-audit.jsonl

check: install
	$(BIN)/agent-firewall check policies/*.yaml
	$(BIN)/agent-firewall test policies/*.yaml

test: check
	$(BIN)/ruff check firewall tests benchmarks training
	$(BIN)/python -m pytest -q

bench: install
	$(BIN)/python benchmarks/bench_proxy.py --write benchmarks/RESULTS.md
	$(BIN)/python benchmarks/bench_stream.py --write benchmarks/RESULTS.md
	$(BIN)/python benchmarks/detection/run.py --write benchmarks/RESULTS.md
	$(BIN)/python benchmarks/bench_semantic.py --write benchmarks/RESULTS.md
	$(BIN)/python benchmarks/bench_agents.py --write benchmarks/RESULTS.md
	$(BIN)/python benchmarks/lineage_recall.py --write benchmarks/RESULTS.md
	$(BIN)/python benchmarks/bench_audit_index.py --write benchmarks/RESULTS.md

clean:
	rm -rf $(VENV) demo-audit.jsonl .pytest_cache
