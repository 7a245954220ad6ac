"""``import aisp_trl`` and an AISP search on a tiny model need none of the optional stack.

The GPU machine this project times on has torch, transformers, accelerate, peft, safetensors, tokenizers, tqdm,
matplotlib and pyyaml, but not trl, datasets, vaderSentiment, gguf or vLLM. The child processes below
(`_blocker.run_blocked`) see those, and peft and matplotlib, as uninstalled.
"""

from __future__ import annotations

import json

from _blocker import run_blocked


def test_the_blocker_blocks():
    proc = run_blocked("import importlib.util\nprint(importlib.util.find_spec('trl'))\nimport trl")
    assert proc.returncode != 0 and "ModuleNotFoundError" in proc.stderr
    assert proc.stdout.strip() == "None"


def test_aisp_sampler_runs_without_the_optional_stack():
    proc = run_blocked(
        """
import json
import aisp_trl
from aisp_trl import AISPSampler, LengthSampler
from _tiny import make_model, make_tokenizer

model, tok = make_model("llama"), make_tokenizer()  # from a config: no Hub, random weights
sampler = AISPSampler(model, tok, lambda texts: [t.count("e") / 10 for t in texts], LengthSampler(4, 5),
                      sample_size=3, n_iterations=2, seed=0)
texts = sampler.generate([tok("the cat").input_ids, tok("we").input_ids])
result = sampler.search(tok("the cat").input_ids)[0]
print(json.dumps({"texts": texts, "samples": len(result.samples), "leaked": leaked()}))
"""
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["leaked"] == []
    assert [len(t) for t in out["texts"]] == [1, 1]
    assert out["texts"][0][0].startswith("the cat") and out["texts"][1][0].startswith("we")
    assert out["samples"] == 6  # n * kappa samples


def test_the_vllm_facade_imports_and_explains_without_vllm():
    proc = run_blocked(
        """
import aisp_trl.vllm
try:
    aisp_trl.vllm.load_llm()
except ImportError as error:
    print("ImportError:", error)
print("leaked", leaked())
"""
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "ImportError: vLLM is not installed here" in proc.stdout and "scripts/setup.sh --vllm" in proc.stdout
    assert "leaked []" in proc.stdout
