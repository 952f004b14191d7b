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

.PHONY: demo test bench host clean venv

$(VENV)/.installed: pyproject.toml setup.py $(wildcard plugins/raster/*)
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q "$(TORCH)"
	$(PIP) install -q -e ".[$(EXTRAS)]"
	touch $@

venv: $(VENV)/.installed

demo: $(VENV)/.installed
	$(VENV)/bin/gt sample synthetic -o $(OUT)/sample --seconds 20 --size 256 --seed 0
	$(VENV)/bin/gt sample preview $(OUT)/sample -o $(OUT)/demo.mp4 --sheet $(OUT)/demo_sheet.png
	@echo "demo written: $(OUT)/demo.mp4 and $(OUT)/demo_sheet.png"

test: $(VENV)/.installed
	$(PY) -m pytest -q

bench: $(VENV)/.installed
	$(PY) tools/bench/raster.py --out tools/bench/RESULTS.md

host:
	@echo "the C host (plugins/host) is not built yet" >&2; exit 2

clean:
	rm -rf $(VENV) $(OUT) build *.egg-info gt_runtime/*.so .pytest_cache
