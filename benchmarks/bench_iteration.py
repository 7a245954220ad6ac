"""One AISP iteration against plain batched greedy ``generate``, same batch and length, in one run.

Both decode exactly ``--max_new_tokens`` tokens per row (``min_new_tokens``). The AISP iteration is everything
`AISPSampler.search` does with ``n_iterations=1``: input checks, the noise draw, hooked greedy ``generate``,
decoding, the reward and the weight/mean update. Repetitions alternate the order of the two cases; the script
prints the ratio of medians and the median of the paired ratios (issue target: <= 1.02; paper: 1%).

With ``--kl_coef B`` a third case runs in the same rotation: the AISP iteration with ``kl_coef=B`` (each row's base
NLL read off the decode), and the script also prints its ratio to the plain AISP iteration (target: <= 1.10).

```bash
python benchmarks/bench_iteration.py                      # SmolLM2-135M-Instruct, n=8, 32 tokens, 12 pairs, 1 thread
python benchmarks/bench_iteration.py --sample_size 32 --max_new_tokens 128 --threads 0 --device cuda
python benchmarks/bench_iteration.py --sample_size 32 --kl_coef 0.1 --pairs 6   # the cost of the KL-regularised search
```
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from aisp_trl import AISPSampler, LengthSampler, VaderSentimentReward
from aisp_trl.models import EMBEDDED_MODEL, load_model_and_tokenizer
from aisp_trl.prompts import apply_chat_template, builtin_prompts


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model_name_or_path", default=EMBEDDED_MODEL)
    parser.add_argument("--sample_size", type=int, default=8, help="n: rows of the batch.")
    parser.add_argument("--max_new_tokens", type=int, default=32, help="The fixed decode length.")
    parser.add_argument("--pairs", type=int, default=12, help="Timed (plain, AISP) pairs after one warm-up.")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (0: leave torch's default).")
    parser.add_argument("--device", default=None, help="cpu, cuda, ... (default: the model stays on CPU).")
    parser.add_argument("--kl_coef", type=float, default=0.0, help="Also time an AISP iteration with this kl_coef.")
    return parser


def main(args: argparse.Namespace) -> dict[str, float]:
    if args.threads:
        torch.set_num_threads(args.threads)
    model, tok = load_model_and_tokenizer(args.model_name_or_path, device=args.device)
    query = tok(apply_chat_template(tok, builtin_prompts(1))[0], add_special_tokens=False).input_ids
    n, tau = args.sample_size, args.max_new_tokens
    ids = torch.tensor([query] * n, device=model.device)
    mask = torch.ones_like(ids)
    reward, lengths = VaderSentimentReward(), LengthSampler(tau, tau + 1)
    sampler = AISPSampler(model, tok, reward, lengths, sample_size=n, n_iterations=1, seed=0)
    regularised = AISPSampler(model, tok, reward, lengths, sample_size=n, n_iterations=1, seed=0, kl_coef=args.kl_coef)

    def plain() -> None:
        with torch.no_grad():
            out = model.generate(
                input_ids=ids, attention_mask=mask, do_sample=False, max_new_tokens=tau, min_new_tokens=tau
            )
        if out.shape[1] != len(query) + tau:
            raise RuntimeError("plain generate did not decode the fixed length")

    def aisp() -> None:
        sampler.search(query, min_new_tokens=tau)

    def aisp_kl() -> None:
        regularised.search(query, min_new_tokens=tau)

    cases = [("plain", plain), ("aisp", aisp)] + ([("aisp_kl", aisp_kl)] if args.kl_coef else [])
    for _, fn in cases:  # warm-up
        fn()
    times: dict[str, list[float]] = {name: [] for name, _ in cases}
    for rep in range(args.pairs):
        for name, fn in cases[rep % len(cases) :] + cases[: rep % len(cases)]:  # rotate the order
            start = time.perf_counter()
            fn()
            if model.device.type == "cuda":
                torch.cuda.synchronize()
            times[name].append(time.perf_counter() - start)
    paired = [a / p for a, p in zip(times["aisp"], times["plain"], strict=True)]
    result = {
        "plain_median_s": statistics.median(times["plain"]),
        "aisp_median_s": statistics.median(times["aisp"]),
        "ratio_of_medians": statistics.median(times["aisp"]) / statistics.median(times["plain"]),
        "median_paired_ratio": statistics.median(paired),
        "min_paired_ratio": min(paired),
        "max_paired_ratio": max(paired),
    }
    if args.kl_coef:
        kl_paired = [k / a for k, a in zip(times["aisp_kl"], times["aisp"], strict=True)]
        result |= {
            "aisp_kl_median_s": statistics.median(times["aisp_kl"]),
            "kl_over_aisp_ratio_of_medians": statistics.median(times["aisp_kl"]) / statistics.median(times["aisp"]),
            "kl_over_aisp_median_paired_ratio": statistics.median(kl_paired),
        }
    print(f"n={n}, {tau} tokens, {args.pairs} pairs, {torch.get_num_threads()} threads")
    print("\n".join(f"{k}: {v:.3f}" for k, v in result.items()))
    return result


if __name__ == "__main__":
    main(make_parser().parse_args())
