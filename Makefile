# Quick start:  make demo   (tiny offline model + demo ladder + `llamafactory-cli train` on CPU)
#               make test   (the whole test suite, offline, CPU: what CI runs)
#               make test-fast (the unit tests, without training runs and launched processes: about a minute)
# Both create .venv and install what they need on first use.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(abspath $(VENV))/bin
# torchrun (used by LLaMA-Factory's multi-process launch) must be on PATH
RUN    := PATH="$(BIN):$$PATH" HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
STAMP  := $(VENV)/.iovqa-installed

.PHONY: install demo test test-fast bench bench-quick clean

install: $(STAMP)

# The torch trio is pinned exactly (LLaMA-Factory 0.9.5 refuses torch 2.9 with Qwen2.5-VL's Conv3d, and the
# registry's torchvision only loads next to the matching registry torch); constraints.txt pins the rest.
$(STAMP): setup.py constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c constraints.txt torch==2.10.0 torchvision==0.25.0 torchaudio==2.10.0
	$(BIN)/python -m pip install -q -c constraints.txt -e ".[test]"
	touch $(STAMP)

demo: install
	$(RUN) $(BIN)/iovqa demo

# one worker per core (at most 4: past that the largest files set the time and each worker builds the shared
# fixtures again), each taking whole files (a file's tests share its module fixtures and trained runs)
TEST_WORKERS ?= $(shell n=$$(nproc 2>/dev/null || echo 2); [ $$n -gt 4 ] && n=4; echo $$n)
test: install
	$(RUN) $(BIN)/python -m pytest tests -n $(TEST_WORKERS) --dist loadfile

test-fast: install
	$(RUN) $(BIN)/python -m pytest tests -m "not slow" -n $(TEST_WORKERS) --dist loadfile

# Benchmarks print their numbers (they are not tests) and write them, with the commands and machine facts,
# to bench/RESULTS.md (`make bench`, over an hour on 2 cores) or bench/RESULTS_quick.md (`make bench-quick`,
# reduced versions of each, under 10 minutes). The speed benchmarks use the demo's adapter (`make demo`).
BENCH_STAMP := $(VENV)/.iovqa-bench-installed

$(BENCH_STAMP): $(STAMP)
	$(BIN)/python -m pip install -q -c constraints.txt -e ".[test,bench]"
	touch $(BENCH_STAMP)

bench: $(BENCH_STAMP)
	test -f work/demo_run/model.safetensors || $(MAKE) demo
	$(RUN) $(BIN)/python bench/run_all.py

bench-quick: $(BENCH_STAMP)
	test -f work/demo_run/model.safetensors || $(MAKE) demo
	$(RUN) $(BIN)/python bench/run_all.py --quick

clean:
	rm -rf work data_info/demo build *.egg-info .pytest_cache
