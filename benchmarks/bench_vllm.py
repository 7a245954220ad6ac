"""HF vs vLLM, side by side in one run: seconds for one AISP iteration and a full search, and the processor's cost
over plain vLLM greedy decoding, at several row counts.

Each backend runs in its own process (an HF model and a vLLM engine hot in one process starve each other's threads
on a small CPU). Every row decodes exactly ``--max_new_tokens`` tokens (``min_new_tokens``), ``sample_size=8`` rows
per prompt; a case is timed ``--repeats`` times after one warm-up, and the median is printed.

```bash
python benchmarks/bench_vllm.py                                   # SmolLM2, 8 / 32 / 128 rows, 32 tokens, CPU
python benchmarks/bench_vllm.py --model_name_or_path meta-llama/Llama-3.1-8B-Instruct --rows 32 128 512 \
    --max_new_tokens 128 --device cuda                            # on a GPU
```
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

SAMPLE_SIZE = 8


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model_name_or_path", default=None, help="Folder or Hub id (default: embedded SmolLM2).")
    parser.add_argument("--rows", type=int, nargs="+", default=[8, 32, 128], help="Rows per iteration (x8).")
    parser.add_argument("--max_new_tokens", type=int, default=32)
    parser.add_argument("--search_iterations", type=int, default=4, help="Iterations of the full search.")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default=None, help="cuda for the HF model on a GPU (vLLM picks its own).")
    parser.add_argument(
        "--threads", type=int, default=None,
        help="CPU only: cores of both backends (torch.set_num_threads for HF, VLLM_CPU_OMP_THREADS_BIND=0..N-1 for "
        "vLLM), so that they run on the same cores; default: all.",
    )  # fmt: skip
    parser.add_argument("--output", default=None, help="Also write the results as JSON here.")
    parser.add_argument("--backend", choices=["hf", "vllm"], default=None, help=argparse.SUPPRESS)
    parser.add_argument("--result_file", default=None, help=argparse.SUPPRESS)
    return parser


def _median_seconds(fn: Any, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _queries(tokenizer: Any, count: int) -> list[list[int]]:
    from aisp_trl.prompts import apply_chat_template, builtin_prompts

    prompts = (builtin_prompts() * count)[:count]
    texts = apply_chat_template(tokenizer, [f"{p} (variant {i})" for i, p in enumerate(prompts)])
    return [tokenizer(t, add_special_tokens=False).input_ids for t in texts]


def run_backend(args: argparse.Namespace) -> dict[str, Any]:
    """Times, on one backend: an AISP iteration and a full search per row count, and greedy with / without noise."""
    if args.backend == "hf":
        import torch

        from aisp_trl.models import EMBEDDED_MODEL, load_model_and_tokenizer

        if args.threads:
            torch.set_num_threads(args.threads)
        model, tokenizer = load_model_and_tokenizer(args.model_name_or_path or EMBEDDED_MODEL, device=args.device)
    else:
        from aisp_trl.vllm import load_llm, load_tokenizer

        model, tokenizer = load_llm(args.model_name_or_path), load_tokenizer(args.model_name_or_path)
    out = {}
    for rows in args.rows:
        out[rows] = time_rows(model, tokenizer, rows, args)
        print(args.backend, rows, out[rows], file=sys.stderr, flush=True)
    return out


def time_rows(model: Any, tokenizer: Any, rows: int, args: argparse.Namespace) -> dict[str, float]:
    """Median seconds at ``rows`` rows (``rows / 8`` prompts of 8 samples) on ``model`` (HF model or vllm.LLM)."""
    from transformers import GenerationConfig

    from aisp_trl import AISPSampler, LengthSampler, VaderSentimentReward
    from aisp_trl.decoding import NoiseDraw, PrelogitNoise

    tau, reward = args.max_new_tokens, VaderSentimentReward()
    config = GenerationConfig(min_new_tokens=tau)  # every row decodes exactly tau tokens
    queries = _queries(tokenizer, max(1, rows // SAMPLE_SIZE))

    def search(iterations: int) -> None:
        sampler = AISPSampler(
            model, tokenizer, reward, LengthSampler(tau, tau + 1), SAMPLE_SIZE, 0, 1, config,
            n_iterations=iterations, prompt_batch_size=len(queries),
        )  # fmt: skip
        sampler.search(queries)

    sampler = AISPSampler(model, tokenizer, reward, LengthSampler(tau, tau + 1), SAMPLE_SIZE, 0, 1, config)
    decoder, width = sampler.decoder, sampler.prelogit_width
    greedy = sampler._greedy_config(tau, {})  # the sampler's greedy settings (min_new_tokens=tau kept)
    flat = [q for q in queries for _ in range(SAMPLE_SIZE)]
    draws = [NoiseDraw(torch_state(j), zeros(tau, width), 0.5, SAMPLE_SIZE, tau) for j in range(len(queries))]
    noise = PrelogitNoise(draws, width)
    return {
        "iteration": _median_seconds(lambda: search(1), args.repeats),
        "search": _median_seconds(lambda: search(args.search_iterations), 1),
        "greedy": _median_seconds(lambda: decoder.greedy(flat, [tau] * len(flat), greedy), args.repeats),
        "greedy+noise": _median_seconds(lambda: decoder.greedy(flat, [tau] * len(flat), greedy, noise), args.repeats),
    }


def torch_state(seed: int) -> Any:
    import torch

    return torch.Generator().manual_seed(seed).get_state()


def zeros(*shape: int) -> Any:
    import torch

    return torch.zeros(shape)


def main(args: argparse.Namespace) -> None:
    if args.backend is not None:  # a child: its results go to a file (vLLM also writes to stdout)
        Path(args.result_file).write_text(json.dumps(run_backend(args)))
        return
    results: dict[str, Any] = {}
    env = dict(os.environ)
    if args.threads:
        env.setdefault("VLLM_CPU_OMP_THREADS_BIND", ",".join(map(str, range(args.threads))))
    with tempfile.TemporaryDirectory() as folder:
        for backend in ("hf", "vllm"):
            result_file = Path(folder) / f"{backend}.json"
            command = [sys.executable, __file__, "--backend", backend, "--result_file", str(result_file), *sys.argv[1:]]
            proc = subprocess.run(command, env=env, stdout=subprocess.DEVNULL)  # progress lines go to stderr
            if proc.returncode != 0 or not result_file.is_file():
                raise SystemExit(f"the {backend} run failed (exit status {proc.returncode}); its stderr is above")
            results[backend] = json.loads(result_file.read_text())
    print(f"seconds (median), sample_size={SAMPLE_SIZE}, {args.max_new_tokens} tokens per row")
    header = "rows | HF iteration | vLLM iteration | HF search | vLLM search | vLLM greedy | vLLM greedy+noise | cost"
    print(header)
    print("|".join("---" for _ in header.split("|")))
    for rows in map(str, args.rows):
        hf, vl = results["hf"][rows], results["vllm"][rows]
        cost = vl["greedy+noise"] / vl["greedy"]
        print(
            f"{rows} | {hf['iteration']:.2f} | {vl['iteration']:.2f} | {hf['search']:.2f} | {vl['search']:.2f} | "
            f"{vl['greedy']:.2f} | {vl['greedy+noise']:.2f} | {cost:.2f}x"
        )
    if args.output:
        Path(args.output).write_text(json.dumps({"settings": vars(args), "seconds": results}, indent=2))


if __name__ == "__main__":
    main(make_parser().parse_args())
