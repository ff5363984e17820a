# `make demo`: a closed-loop correction on the virtual microscope.  `make test`: the test suite.
# `make docs`: the manual in site/. `make lint`: ruff, mypy and the import contracts. `make reliability`: the
# fault-injection suite, which writes docs/reliability.md. All create .venv and install the project (torch pinned to
# the local CPU wheel by constraints.txt).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint docs install clean reliability reference browser

LOG := $(VENV)/install.log

# one line per step; pip's output goes to $(LOG), and is shown only when it fails
$(STAMP): pyproject.toml constraints.txt
	@echo "install: $(VENV) (pip log: $(LOG))"
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(BIN)/python -m pip install --upgrade pip > $(LOG) 2>&1 || (cat $(LOG); exit 1)
	@$(BIN)/python -m pip install -c constraints.txt -e ".[test,docs,lint,nion]" >> $(LOG) 2>&1 || (tail -50 $(LOG); exit 1)
	@touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	@echo "demo: drift plugins, then drift run configs/quickstart.yaml"
	@$(BIN)/drift plugins
	@$(BIN)/drift run configs/quickstart.yaml --overwrite
	@echo "drift is in $(BIN): 'source $(VENV)/bin/activate' puts it on your PATH (or call $(BIN)/drift)"

browser:   # Debian's chromium + chromium-driver for the live view's browser tests (apt-get, as root)
	@bash .ci/install-browser

test: $(STAMP) browser
	@echo "test: pytest"
	@$(BIN)/python -m pytest -q -p no:cacheprovider --durations=15

lint: $(STAMP)   # style and errors (ruff), types (mypy: core and plugins), import contracts (import-linter)
	@echo "lint: ruff, mypy, import contracts"
	@$(BIN)/ruff check -q .
	@$(BIN)/mypy > $(VENV)/mypy.log 2>&1 && tail -1 $(VENV)/mypy.log || (cat $(VENV)/mypy.log; exit 1)
	@$(BIN)/lint-imports > $(VENV)/imports.log 2>&1 && tail -1 $(VENV)/imports.log || (cat $(VENV)/imports.log; exit 1)

reliability: $(STAMP)   # fault injection and fuzzing at the published sizes, with the 10 000-step run
	$(BIN)/python -m reliability --long --out docs

reference: $(STAMP)   # regenerate docs/reference/ from the code (tests fail when it is stale)
	@$(BIN)/python -m drift_framework.docgen docs

docs: $(STAMP)   # the manual: site/ (tests build it too, with --strict)
	DISABLE_MKDOCS_2_WARNING=true NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

clean:
	rm -rf runs site .pytest_cache build *.egg-info
