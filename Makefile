# Two commands: `make run` (ingest seeds/, then one search and one SQL query) and `make test`.
# Both create .venv on first use. torch is installed first and alone: pip then takes the local CPU
# wheel, and nothing later pulls the multi-gigabyte CUDA build.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

export HF_HUB_OFFLINE := 1
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export DO_NOT_TRACK := 1

.PHONY: run test setup lock clean

run: $(VENV)/.installed
	$(BIN)/newsindex ingest seeds/
	$(BIN)/newsindex search "Who warned Russia before the concert hall attack?" -k 3
	$(BIN)/newsindex sql "SELECT title, published, chunks FROM articles ORDER BY published DESC LIMIT 5"

test: $(VENV)/.installed
	$(BIN)/python -m pytest

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check torch==2.13.0
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[test]'
	touch $@

# Rewrite constraints.txt from the current environment (after a deliberate upgrade, then `make test`).
lock:
	{ sed -n '1,2p' constraints.txt; $(BIN)/python -m pip freeze --exclude-editable | sed 's/^torch==\(.*\)+cpu/torch==\1/'; } > constraints.new && mv constraints.new constraints.txt

clean:
	rm -rf $(VENV) warehouse/*.duckdb warehouse/*.duckdb.wal warehouse/*.duckdb.vectors warehouse/*.duckdb.ann
