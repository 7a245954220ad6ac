"""The samplers' runs that tests/test_vllm.py compares across backends, on the embedded SmolLM2-135M-Instruct.

    python tests/scripts/vllm_vs_hf.py hf OUT.json     # HF model + pre-logit hook (needs no vLLM)
    python tests/scripts/vllm_vs_hf.py vllm OUT.json   # load_llm() + logits processor

Writes ``{"aisp": [[ids per sample] per query], "greedy": [ids per query], "seconds": {...}}``. The test runs the HF
side in its own process: an HF model and a vLLM engine hot in one process starve each other's threads on 2 cores.
"""

from __future__ import annotations

import itertools
import json
import sys
import time
from typing import Any

CHATS = ["Hi", "Write one short, happy sentence about the sea and the sun."]
HORIZONS = [20, 12]  # per query, in query order: "Hi" is answered in ~10 tokens, so EOS falls inside its horizon


def letter_reward(texts: list[str]) -> list[float]:
    """A deterministic reward that varies between samples (so AISP's second iteration moves its mean)."""
    return [float(text.count("e")) for text in texts]


def queries(tokenizer: Any) -> list[list[int]]:
    out = []
    for chat in CHATS:
        ids = tokenizer.apply_chat_template([{"role": "user", "content": chat}], add_generation_prompt=True)
        out.append(list(ids if isinstance(ids, list) else ids["input_ids"]))
    return out


def horizons() -> Any:
    return itertools.cycle(HORIZONS).__next__


def run(model: Any, tokenizer: Any) -> dict[str, Any]:
    from aisp_trl import AISPSampler, GreedySampler

    qs, seconds = queries(tokenizer), {}
    aisp = AISPSampler(
        model, tokenizer, letter_reward, horizons(), sample_size=4, n_iterations=2, seed=0, prompt_batch_size=2
    )
    start = time.perf_counter()
    results = aisp.search(qs)
    seconds["aisp"] = time.perf_counter() - start
    greedy = GreedySampler(model, tokenizer, letter_reward, horizons(), prompt_batch_size=2)
    start = time.perf_counter()
    plain = greedy.search(qs)
    seconds["greedy"] = time.perf_counter() - start
    return {
        "aisp": [[s.completion_ids for s in r.samples] for r in results],
        "greedy": [r.samples[0].completion_ids for r in plain],
        "seconds": seconds,
    }


def main() -> None:
    backend, out = sys.argv[1], sys.argv[2]
    if backend == "hf":
        from aisp_trl.models import load_model_and_tokenizer

        model, tokenizer = load_model_and_tokenizer()
    else:
        from aisp_trl.vllm import load_llm, load_tokenizer

        model, tokenizer = load_llm(max_model_len=512), load_tokenizer()
    with open(out, "w") as handle:
        json.dump(run(model, tokenizer), handle)


if __name__ == "__main__":
    main()
