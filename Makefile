# gt: the README's two commands are `make demo` and `make test`.
# Everything installs into .venv; nothing outside this folder is touched.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
# The CPU build of torch keeps the venv under 1 GB; override for a CUDA build.
TORCH  ?= torch==2.13.0
EXTRAS ?= all
OUT    ?= out

.PHONY: demo demo-full default-bundle test bench host clean venv

$(VENV)/.installed: pyproject.toml setup.py $(wildcard plugins/*/*)
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q "$(TORCH)"
	$(PIP) install -q -e ".[$(EXTRAS)]"
	touch $@

venv: $(VENV)/.installed

# The bundled default identity (gt_runtime/assets/default.gtb, a synthetic head at 256 px, 20k Gaussians) plays a
# speech it was not trained on -> out/demo.mp4 with sound, a contact sheet, and the FPS figures.
DEMO_SPEECH := gt_runtime/assets/speech/cross_8s.flac
demo: $(VENV)/.installed
	@mkdir -p $(OUT)
	$(VENV)/bin/gt play $(DEMO_SPEECH) -o $(OUT)/demo.mp4 --sheet $(OUT)/demo_sheet.png --fps
	@echo "demo written: $(OUT)/demo.mp4 and $(OUT)/demo_sheet.png (the whole chain: make demo-full)"

# The whole chain: a synthetic identity driven by the bundled training speech -> train (test-tiny
# preset) -> export (FP16 + INT8 checks) -> play a different speech -> out/full/demo.mp4.
demo-full: $(VENV)/.installed
	rm -rf $(OUT)/full
	$(VENV)/bin/gt sample synthetic -o $(OUT)/full/sample --seconds 20 --size 256 --seed 0
	$(VENV)/bin/gt train $(OUT)/full/sample -o $(OUT)/full/run --preset test-tiny
	$(VENV)/bin/gt export $(OUT)/full/run --fp16 --int8 -o $(OUT)/full/demo.gtb
	$(VENV)/bin/gt play $(DEMO_SPEECH) --bundle $(OUT)/full/demo.gtb -o $(OUT)/full/demo.mp4 --sheet $(OUT)/full/demo_sheet.png --fps
	@echo "demo written: $(OUT)/full/demo.mp4 (training curves and validation images: $(OUT)/full/run/)"

# Rebuild gt_runtime/assets/default.gtb (the cpu-small preset: about 1.5 h on 2 cores)
default-bundle: $(VENV)/.installed
	$(PY) tools/default_bundle.py

test: $(VENV)/.installed
	$(PY) -m ruff check .
	$(PY) -m pytest -q

bench: $(VENV)/.installed
	$(PY) -m tools.bench.raster --cpu-budget 180 --out tools/bench/RESULTS.md
	$(PY) -m tools.bench.suite --out tools/bench/RESULTS.md

# One prepared check for a lent GPU (tools/gpu_check.py, under 8 minutes): the gpu tests, then the GPU
# benchmarks -> $(OUT)/gpu_check/gpu_check.{json,md}. No venv needed: the lent machine's own python
# (torch, cupy, onnxruntime installed) runs it from the source tree. Without a GPU every step is skipped.
GPU_PY ?= $(if $(wildcard $(PY)),$(PY),$(PYTHON))
.PHONY: gpu-check
gpu-check:
	PYTHONPATH=. $(GPU_PY) tools/gpu_check.py --out $(OUT)/gpu_check

# C host API (plugins/host): libgt_host.so embeds the Python that runs gt_runtime
# (the venv's base interpreter when .venv exists, else $(PYTHON)); see plugins/host/README.md.
HOST_PY     = $(if $(wildcard $(PY)),$(PY),$(PYTHON))
HOST_DIR    = build/host
HOST_CFLAGS = -O2 -g -Wall -Wextra -std=gnu11
# The library, by job (plugins/host/gt_host_internal.h); its Python half is gt_runtime/host/bridge.py.
HOST_SRC    = $(addprefix plugins/host/gt_host_,api.c errors.c frames.c handles.c python.c)
host: $(HOST_DIR)/libgt_host.so $(HOST_DIR)/example_host $(HOST_DIR)/test_host_errors

$(HOST_DIR)/libgt_host.so: $(HOST_SRC) plugins/host/gt_host.h plugins/host/gt_host_internal.h plugins/host/pyflags.py
	@$(HOST_PY) plugins/host/pyflags.py --check
	@mkdir -p $(HOST_DIR)
	$(CC) $(HOST_CFLAGS) -fPIC -shared -fvisibility=hidden $$($(HOST_PY) plugins/host/pyflags.py --cflags) \
	  -DGT_HOST_DEFAULT_PYTHON='"$(abspath $(VENV))/bin/python"' -DGT_HOST_DEFAULT_PATH='"$(CURDIR)"' \
	  -o $@ $(HOST_SRC) $$($(HOST_PY) plugins/host/pyflags.py --ldflags) -lpthread

$(HOST_DIR)/%: plugins/host/%.c plugins/host/gt_host.h $(HOST_DIR)/libgt_host.so
	$(CC) $(HOST_CFLAGS) -Iplugins/host -o $@ $< -L$(HOST_DIR) -lgt_host -Wl,-rpath,'$$ORIGIN' -lm -lpthread

clean:
	rm -rf $(VENV) $(OUT) build *.egg-info gt_runtime/*.so .pytest_cache
