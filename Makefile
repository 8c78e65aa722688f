# tf-lth: `make test` is the test command (CI runs it via .ci/run); `make demo` trains a model.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: venv demo test test-fast test-slow clean distclean

venv: $(STAMP)

# Reinstall (editable, with the test extra) only when pyproject.toml changes.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -e '.[test]'
	touch $@

demo: venv
	$(BIN)/python scripts/run_lth.py
	@echo "tf-lth is installed in $(VENV)/bin: run 'source $(VENV)/bin/activate' to have the tf-lth command on your PATH"

# Two processes, each file's tests in one of them (its module fixtures built once): ~14 min on 2
# cores (863 s measured with 799 tests, partly under load); TESTFLAGS= runs it in one process (slower).
TESTFLAGS ?= -n 2 --dist loadfile
test: venv
	$(BIN)/python -m pytest $(TESTFLAGS)

# The inner loop: every test but those that train beyond a few steps or start a process (marked heavy).
test-fast: venv
	$(BIN)/python -m pytest $(TESTFLAGS) -m "not slow and not heavy"

# What `make test` leaves out for time (marked slow): run before a release or after changing what they cover.
test-slow: venv
	$(BIN)/python -m pytest $(TESTFLAGS) -m slow

# Build artefacts and caches; the virtualenv, runs/ and saved_models/ are kept.
clean:
	rm -rf build dist *.egg-info .pytest_cache
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -exec rm -rf {} +

# Also drop the virtualenv (the next `make` reinstalls everything).
distclean: clean
	rm -rf $(VENV)
