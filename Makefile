# Luna Semantic Detailer — the two commands a new user needs: `make run` and `make test`.
PYTHON ?= python3
PORT ?= 8188
HOST_TARBALL ?= ../shared/hosts/comfyui-0.28.0.tar.gz
export PYTHON

.PHONY: run test test-fast host host-0.28 test-compat bench clean-host

host:                     ## provision .venv + .comfyui (ComfyUI 0.3.75 from PyPI) with this pack linked
	@scripts/provision-host.sh horde .comfyui .venv

run: host                 ## start ComfyUI with this pack at http://127.0.0.1:$(PORT)
	@scripts/run-host.sh .comfyui .venv $(PORT) $(ARGS)

test: host                ## the whole test suite in the local host
	@scripts/browser.sh
	@scripts/test.sh .comfyui .venv $(ARGS)

test-fast: host           ## the suite without tests marked slow
	@scripts/browser.sh
	@scripts/test.sh .comfyui .venv -m "not slow" $(ARGS)

host-0.28:                ## provision .venv-0.28 + .comfyui-0.28 from $(HOST_TARBALL)
	@scripts/provision-host.sh $(HOST_TARBALL) .comfyui-0.28 .venv-0.28

bench: host               ## kernel benchmarks (figures go to BENCHMARKS.md by hand)
	@.venv/bin/python benchmarks/kernels.py

clean-host:               ## remove the local hosts (models under .comfyui/models go too)
	rm -rf .venv .comfyui .venv-0.28 .comfyui-0.28
