PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test install serve worker bench clean chromium

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# torch is pinned first so the resolver keeps the CPU build instead of pulling a CUDA one.
$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e ".[dev,eval]"
	touch $(STAMP)

install: $(STAMP)

# The browser tests need Chromium: installed with apt when missing and this is root, else a clear message.
chromium:
	@[ -n "$$UNMASK_CHROMIUM" ] || command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || \
	  { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && apt-get update -qq && \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } || \
	  { echo "the browser tests need Chromium: sudo apt-get install chromium (or set UNMASK_CHROMIUM)"; exit 1; }

test: $(STAMP) chromium
	$(BIN)/python -m pytest -q

# The whole product: a private Redis, the API with the viewer, one training worker.
run: $(STAMP)
	$(BIN)/unmask up

serve: $(STAMP)
	$(BIN)/unmask serve

worker: $(STAMP)
	$(BIN)/unmask worker

# Every benchmark, then `unmask eval`, then docs/results.md from their records (about an hour on 2 CPU cores).
bench: $(STAMP)
	$(BIN)/pip install --quiet -e ".[bench]"
	$(BIN)/python bench/speed.py
	$(BIN)/python bench/dtype.py
	$(BIN)/python bench/int8.py
	$(BIN)/python bench/threshold.py
	$(BIN)/python bench/training.py
	$(BIN)/python bench/parallel.py
	$(BIN)/python bench/sampler.py
	$(BIN)/python bench/serve.py
	$(BIN)/python bench/repetition.py
	$(BIN)/python bench/mutants.py
	$(BIN)/unmask eval --out bench/results/eval
	$(BIN)/unmask eval --new-tokens 256 --only default --only cache --out bench/results/eval256
	$(BIN)/python bench/report.py

clean:
	rm -rf $(VENV) .pytest_cache
