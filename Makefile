# The two commands of the README (each sets up everything it needs on a fresh machine), and the extras.
# Two test hosts (harness/paths.py): ComfyUI 0.3.75 (the default: .venv, .host) and ComfyUI 0.33.0 from
# ../shared/hosts (COMFY_HOST=0.33: .venv-0.33, .host-0.33). `make test` runs the unit tests once and the host and
# e2e tests on both hosts (ON_033_IN_SLOW below and the optimiser example workflows on 0.3.75 only: `make test-slow`
# runs them on 0.33), the e2e frontend tests a third time on frontend 1.58.1; a clone without
# ../shared runs the 0.3.75 host and says that the second host was skipped and why.
PY      := .venv/bin/python
PYTEST  := $(PY) -m pytest -c tests/pytest.ini --rootdir=tests --durations=25
PY2     := .venv-0.33/bin/python
PYTEST2 := COMFY_HOST=0.33 $(PY2) -m pytest -c tests/pytest.ini --rootdir=tests --durations=25
export OMP_NUM_THREADS ?= 2
# on the 0.33 host these run in `make test-slow` only (make test runs them on 0.3.75): the bench smoke tests, the
# precision and stock-patch tables, and the method-by-method property suites (on 0.33 `make test` runs every node
# through the family matrix, the gradient-privacy and host-difference tests and the e2e workflows)
ON_033_IN_SLOW := tests/host/test_bench_smoke.py tests/host/test_precisions_host.py tests/host/test_patches_host.py \
	tests/host/test_caso_host.py tests/host/test_csds_host.py tests/host/test_ddim_host.py tests/host/test_doodl_host.py \
	tests/host/test_edict_host.py tests/host/test_hspace_host.py tests/host/test_hspace_train_host.py \
	tests/host/test_stylediffusion_host.py
SLOW_ON_033 := $(addprefix --ignore=,$(ON_033_IN_SLOW))

.PHONY: setup setup-0.33 demo test test-0.33 test-unit test-host test-e2e test-slow bench examples gpu-check clean

setup:            ## venv + ComfyUI 0.3.75 + tiny models + chromium (idempotent; seconds when nothing changed)
	python3 harness/setup_host.py --browser

setup-0.33:       ## the same for ComfyUI 0.33.0 from ../shared/hosts (and frontend 1.58.1)
	COMFY_HOST=0.33 python3 harness/setup_host.py --browser

demo: setup       ## run every example workflow on a real headless ComfyUI; prints the output folder
	python3 harness/setup_host.py --templates --quiet
	$(PY) -m harness.demo

test: setup       ## all tests: unit once; host (in-process ComfyUI) and e2e (server + Chromium) on both hosts
	$(PYTEST) tests -m "not slow"
	@if python3 harness/setup_host.py --check-shared; then $(MAKE) --no-print-directory test-0.33; \
	else echo "make test: the ComfyUI 0.33 host was skipped (see the line above); only 0.3.75 was tested"; fi

test-0.33: setup-0.33  ## host and e2e tests on ComfyUI 0.33.0 (frontend 1.49.6), the frontend tests on 1.58.1
	$(PYTEST2) tests/host tests/e2e -m "not slow" $(SLOW_ON_033)
	COMFY_FRONTEND=1.58.1 $(PYTEST2) tests/e2e -m "frontend and not slow"

test-unit: setup
	$(PYTEST) tests/unit
test-host: setup
	$(PYTEST) tests/host
test-e2e: setup
	$(PYTEST) tests/e2e
test-slow: setup  ## checks too long for the default run (large model families, the Z-Image template; on 0.33 also
                  ## ON_033_IN_SLOW and the optimiser example workflows)
	python3 harness/setup_host.py --templates --quiet
	$(PYTEST) tests -m slow
	@if python3 harness/setup_host.py --check-shared; then $(MAKE) --no-print-directory setup-0.33 && \
	COMFY_HOST=0.33 python3 harness/setup_host.py --templates --quiet && \
	$(PYTEST2) $(ON_033_IN_SLOW) && \
	$(PYTEST2) tests/host/test_family_matrix_host.py tests/e2e -m slow; fi

bench: setup      ## speed ratios measured side by side, printed as a table
	$(PY) -m bench

examples: setup   ## regenerate example_workflows/*.json from harness/examples.py through the real frontend
	$(PY) -m harness.examples

gpu-check:        ## on a CUDA machine: every gradient node after a stock KSampler, dynamic VRAM on and off, + realscale
	python3 -m bench.gpu_check

clean:            ## remove the venvs, the hosts, the frontends and demo outputs
	rm -rf .venv .host .venv-0.33 .host-0.33 .frontends out
