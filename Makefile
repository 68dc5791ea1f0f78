# Luna Semantic Detailer — the two commands a new user needs: `make run` and `make test`.
PYTHON ?= python3
PORT ?= 8188
# The second tested host: ComfyUI 0.33.0, the newest release to be had (0.3.75, the oldest supported, is `make host`).
HOST_TARBALL ?= ../shared/hosts/comfyui-0.33.0.tar.gz
# 0.33's requirements.txt lists torchaudio (comfy.sd imports it at start-up); pinned to what pip picks with
# torch 2.14.1 (requirements-host.txt), which imports and loads there.
HOST_033_EXTRA ?= torchaudio==2.11.1
# On the 0.33 host: the whole suite (host, API, bundled workflows, core BOUNDING_BOX, in-process) except
# - the full-size SAM3 run (slow; the pack's own model code, the same on both hosts);
# - the check that the bundled workflow files match the live node definitions: they are built on 0.3.75, and newer
#   core nodes have other display names;
# - the browser tests: `make test` already opens this host with its frontend 1.48 and with the pinned newest one.
COMPAT_TESTS ?= tests \
                --deselect tests/test_sam3_daemon.py::test_full_size_sam3_runs_one_1008px_detection \
                --deselect tests/test_workflows.py::test_files_are_what_the_builder_makes_from_the_live_node_definitions \
                --ignore tests/test_browser.py --ignore tests/test_browser_distributed.py
export PYTHON

.PHONY: run test test-fast test-floors host host-0.33 browser-hosts registry-tools test-compat bench clean-host

host:                     ## provision .venv + .comfyui (ComfyUI 0.3.75 from PyPI) with this pack linked
	@scripts/provision-host.sh horde .comfyui .venv

COMFYUI_PYTHON ?= python3
# The folder `make` was typed in: relative paths in COMFYUI_DIR, COMFYUI_PYTHON, LSD_MODELS and ARGS are read from
# there. The shell's $PWD survives `make -C`, CURDIR does not. (A program that starts make with another working
# directory and a stale PWD should pass PWD=… along.)
CALLER_DIR := $(or $(PWD),$(CURDIR))

ifdef COMFYUI_DIR
run:                      ## start an existing ComfyUI (COMFYUI_DIR, run by COMFYUI_PYTHON) with this pack linked in
	@LSD_CALLER_DIR="$(CALLER_DIR)" scripts/run-host.sh "$(COMFYUI_DIR)" "$(COMFYUI_PYTHON)" $(PORT) $(ARGS)
else
run: host                 ## start ComfyUI with this pack at http://127.0.0.1:$(PORT)
	@LSD_CALLER_DIR="$(CALLER_DIR)" scripts/run-host.sh "$(CURDIR)/.comfyui" "$(CURDIR)/.venv/bin/python" $(PORT) $(ARGS)
endif

test: host browser-hosts registry-tools  ## the whole test suite in the local host (browser tests on three frontends)
	@scripts/test.sh .comfyui .venv $(ARGS)

test-fast: host           ## the suite without tests marked slow
	@scripts/browser.sh
	@scripts/test.sh .comfyui .venv -m "not slow" $(ARGS)

test-floors: host         ## SAM3, detection and interop tests on the oldest versions requirements.txt allows (needs PyPI)
	@scripts/test-floors.sh .venv-floors $(ARGS)

browser-hosts:            ## Chromium, and the browser tests' other hosts: ComfyUI 0.33 with its frontend and with the newest (requirements-frontend.txt)
	@scripts/browser.sh
	@scripts/provision-frontend.sh
	@if [ -f "$(HOST_TARBALL)" ]; then $(MAKE) --no-print-directory host-0.33; \
	else echo "browser-hosts: no ComfyUI 0.33 tarball at $(HOST_TARBALL): browser tests on the local host only"; fi

registry-tools:           ## comfy-cli in .venv-tools, for the Registry checks (comfy node validate / pack)
	@scripts/provision-registry-tools.sh

host-0.33:                ## provision .venv-0.33 + .comfyui-0.33 from $(HOST_TARBALL)
	@scripts/provision-host.sh $(HOST_TARBALL) .comfyui-0.33 .venv-0.33 $(HOST_033_EXTRA)

test-compat:              ## the suite (but the full-size SAM3 run) on ComfyUI 0.33 (skipped, exit 0, without $(HOST_TARBALL))
	@if [ ! -f "$(HOST_TARBALL)" ]; then \
	  echo "test-compat: skipped: no ComfyUI 0.33 tarball at $(HOST_TARBALL) (set HOST_TARBALL=/path/to/comfyui-0.33.0.tar.gz)"; \
	else \
	  $(MAKE) --no-print-directory host-0.33 && scripts/test.sh .comfyui-0.33 .venv-0.33 $(COMPAT_TESTS) $(ARGS); \
	fi

bench: host               ## kernel benchmarks (figures go to BENCHMARKS.md by hand)
	@.venv/bin/python benchmarks/kernels.py

clean-host:               ## remove the local hosts, the pinned frontend and the Registry tools (models under .comfyui/models go too)
	rm -rf .venv .comfyui .venv-0.33 .comfyui-0.33 .frontend .venv-tools
	rm -rf .venv-0.28 .comfyui-0.28  # the second host of earlier checkouts
