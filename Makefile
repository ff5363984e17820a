# `make demo`: a closed-loop correction on the virtual microscope.  `make test`: the test suite.
# `make docs`: the manual in site/. `make lint`: ruff, mypy and the import contracts. `make reliability`: the
# fault-injection suite, which writes docs/reliability.md. All create .venv and install the project (torch pinned to
# the local CPU wheel by constraints.txt).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint docs install clean reliability

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c constraints.txt -e ".[test,docs,lint]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/drift plugins
	$(BIN)/drift run configs/quickstart.yaml --overwrite

test: $(STAMP)
	$(BIN)/python -m pytest -q -p no:cacheprovider

lint: $(STAMP)   # style and errors (ruff), types (mypy: core and plugins), import contracts (import-linter)
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/lint-imports

reliability: $(STAMP)   # fault injection and fuzzing at the published sizes, with the 10 000-step run
	$(BIN)/python -m reliability --long --out docs

docs: $(STAMP)   # the manual: site/ (tests build it too, with --strict)
	DISABLE_MKDOCS_2_WARNING=true NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

clean:
	rm -rf runs site .pytest_cache build *.egg-info
