"""Tune the test-time scalars of the trained methods on training prompts the modules never saw.

RE-Control's ``step_size`` (with ``n_steps`` ascent steps) and the amortized controller's ``scale`` only act at
decoding time. This script decodes ``--num_prompts`` 'general:train' prompts starting at ``--first_prompt`` (default
200: past the 64 the modules are trained on, and disjoint from 'general:bench', which the comparison reports on)
with greedy and with each value, and prints the mean VADER reward and the fraction of responses that differ from
greedy. Pick the value here, then run recipes/compare.py on the held-out prompts with it.

```bash
python benchmarks/tune_controllers.py --value_model_path outputs/re-control-smollm2/value_model.safetensors \
    --controller_path outputs/amortize-smollm2/controller.safetensors --step_sizes 1 10 100 1000 --scales 1 2 4 8 16
```
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from aisp_trl import GreedySampler, LengthSampler, VaderSentimentReward
from aisp_trl.controllers import load_module
from aisp_trl.models import load_model_and_tokenizer
from aisp_trl.pipeline import tokenize_prompts
from aisp_trl.prompts import prompt_split
from aisp_trl.samplers import AmortizedSampler, REControlSampler


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--value_model_path", help="RE-Control's value model (recipes/re_control.py).")
    parser.add_argument("--controller_path", help="The amortized controller (recipes/amortize_aisp.py).")
    parser.add_argument("--step_sizes", type=float, nargs="*", default=[1.0, 10.0, 100.0, 1000.0])
    parser.add_argument("--n_steps", type=int, default=30)
    parser.add_argument("--scales", type=float, nargs="*", default=[1.0, 2.0, 4.0, 8.0, 16.0])
    parser.add_argument("--first_prompt", type=int, default=200)
    parser.add_argument("--num_prompts", type=int, default=8)
    parser.add_argument("--max_new_tokens", type=int, default=32)
    parser.add_argument("--threads", type=int, default=1)
    return parser


def main(args: argparse.Namespace) -> dict:
    torch.set_num_threads(args.threads)
    prompts = prompt_split("train")[args.first_prompt : args.first_prompt + args.num_prompts]
    model, tokenizer = load_model_and_tokenizer()
    reward, horizon = VaderSentimentReward(), LengthSampler(args.max_new_tokens, args.max_new_tokens + 1)
    _, queries = tokenize_prompts(tokenizer, prompts)

    base_ids: list[list[int]] = []  # greedy's responses, filled by the first run

    def run(name: str, sampler) -> dict:
        start = time.perf_counter()
        results = sampler.search(queries, prompts=prompts)
        seconds = (time.perf_counter() - start) / len(prompts)
        ids = [r.best.completion_ids for r in results]
        if not base_ids:
            base_ids.extend(ids)
        row = {
            "name": name,
            "reward": sum(r.best.reward for r in results) / len(results),
            "changed": sum(a != b for a, b in zip(ids, base_ids, strict=True)) / len(ids),
            "seconds_per_prompt": seconds,
        }
        print(json.dumps(row), flush=True)
        return row

    rows = [run("greedy", GreedySampler(model, tokenizer, reward, horizon, prompt_batch_size=4))]
    if args.value_model_path:
        value, _ = load_module(args.value_model_path, kind="value")
        for step in args.step_sizes:
            sampler = REControlSampler(
                model, tokenizer, reward, horizon, value, n_steps=args.n_steps, step_size=step, prompt_batch_size=4
            )
            rows.append(run(f"re_control step_size={step:g}", sampler))
    if args.controller_path:
        controller, _ = load_module(args.controller_path, kind="controller")
        for scale in args.scales:
            sampler = AmortizedSampler(model, tokenizer, reward, horizon, controller, scale=scale, prompt_batch_size=4)
            rows.append(run(f"amortized scale={scale:g}", sampler))
    return {"prompts": prompts, "rows": rows}


if __name__ == "__main__":
    main(make_parser().parse_args())
