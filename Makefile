# The two commands: `make run` and `make test`. Everything else is a detail of those.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

.PHONY: install run demo serve test lint format bench mutate clean vendor

install: $(STAMP)

$(STAMP): pyproject.toml scripts/install.sh
	@bash scripts/install.sh
	@touch $(STAMP)

run: install  ## set up everything and serve on the embedded model and SQLite
	$(VENV)/bin/chatsessions serve $(SERVE_ARGS)

demo: install
	$(VENV)/bin/chatsessions demo

test: install  ## lint, types, the browser the console's tests drive, then the whole suite (shuffled: PYTEST_ARGS="-p randomly")
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy
	@bash scripts/chromium.sh
	$(PY) -m pytest $(PYTEST_ARGS)

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

format: install
	$(VENV)/bin/ruff format src tests bench

vendor:  ## refresh the vendored browser code (Swagger UI, marked, DOMPurify) from npm
	@bash scripts/vendor.sh

bench: install
	$(PY) -m bench $(BENCH_ARGS)

mutate: install  ## mutation testing of the guarantee modules (by hand, long): TARGETS="circuit leases"
	$(PY) scripts/mutate.py $(TARGETS)

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache .mutate
