# The two commands of the README (each sets up everything it needs on a fresh machine), and the extras.
PY      := .venv/bin/python
PYTEST  := $(PY) -m pytest -c tests/pytest.ini --rootdir=tests
export OMP_NUM_THREADS ?= 2

.PHONY: setup demo test test-unit test-host test-e2e test-slow bench examples clean

setup:            ## venv + ComfyUI 0.3.75 + tiny models + chromium (idempotent; seconds when nothing changed)
	python3 harness/setup_host.py --browser

demo: setup       ## run every example workflow on a real headless ComfyUI; prints the output folder
	$(PY) -m harness.demo

test: setup       ## all tests: unit, host (in-process ComfyUI), e2e (server + frontend in Chromium)
	$(PYTEST) tests -m "not slow"

test-unit: setup
	$(PYTEST) tests/unit
test-host: setup
	$(PYTEST) tests/host
test-e2e: setup
	$(PYTEST) tests/e2e
test-slow: setup  ## checks too long for the default run
	$(PYTEST) tests -m slow

bench: setup      ## speed ratios measured side by side, printed as a table
	$(PY) -m bench

examples: setup   ## regenerate example_workflows/*.json from harness/examples.py through the real frontend
	$(PY) -m harness.examples

clean:            ## remove the venv, the host and demo outputs
	rm -rf .venv .host out
