"""GPU cost of one AISP iteration next to plain greedy ``generate`` and one BoN (top-p) iteration, at the paper's shape.

A causal LM built from a config with random weights (default: the Llama-3-8B shape, bf16, on CUDA; random weights
are fine for speed and never for quality), the paper's shape (section 5.3: n = 32 rows, tau = 128 new tokens, one
prompt of a few hundred tokens; Batched AISP with b = 4 prompts in one batch of b·n rows). Every case decodes exactly
tau tokens per row: the model and the tokenizer have no EOS token, so nothing stops early (checked: ``fixed_length``).
Cases, timed side by side in one run (warm-up first, then interleaved repetitions in rotated order, each one between
two ``torch.cuda.synchronize()``; medians reported):

- ``aisp_iteration``: ``AISPSampler(..., n_iterations=1).search`` on one prompt: noise draw, hooked greedy decoding
  of n rows, decoding to text, scoring (a cheap Python reward), importance weights and the mean update;
- ``greedy_generate``: plain batched greedy ``model.generate`` of the same n rows (each row runs its own prefill);
- ``decoder_greedy``: the same rows through AISP's decoder (`aisp_trl.decoding.HFDecoder`) without noise: it runs the
  prompt's prefill once and copies its cache to the rows, so ``aisp_iteration / decoder_greedy`` is what AISP adds
  to decoding, and ``aisp_iteration / greedy_generate`` what a user sees against ``generate``;
- ``bon_iteration``: ``BestOfNSampler`` (top-p 0.9) with N = n on the same prompt, scoring included;
- ``aisp_host_only``: the AISP iteration with a decoder that runs no model (it only builds the noise tensor and moves
  it to the device, as the hook does): what the iteration spends outside the model, mostly on the CPU;
- ``batched_aisp_iteration`` / ``batched_greedy_generate``: the same on b prompts (b·n rows, left-padded).

Targets on an H200 at the default shape: ``aisp_iteration / greedy_generate <= 1.02`` and ``aisp_iteration <= 3.9
s``. Peak memory per case is ``torch.cuda.max_memory_allocated`` (weights included). ``--max_batch_rows`` caps the rows
per ``generate`` call in every case. Prints a markdown table; ``--output`` writes the JSON.

It needs torch, transformers, accelerate, safetensors, tqdm and the ``aisp_trl`` source: no trl, datasets, vLLM or
model download. On a machine with those and this working tree (one command, from the repository root)::

    PYTHONPATH=. python benchmarks/bench_gpu.py --output outputs/bench_gpu.json

A CPU dry run at a tiny shape (a few seconds; what ``tests/test_bench_gpu.py`` runs)::

    PYTHONPATH=. python benchmarks/bench_gpu.py --tiny --device cpu --output outputs/bench_gpu_tiny.json
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import platform
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, NoReturn

import torch
import transformers
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import AutoModelForCausalLM, GenerationConfig, LlamaConfig, PreTrainedTokenizerFast

from aisp_trl import AISPSampler, BestOfNSampler, HFDecoder, LengthSampler
from aisp_trl.decoding import PrelogitNoise

PAD_ID = 0


@dataclass
class Shape:
    """A Llama-architecture shape (the default: Llama-3-8B)."""

    hidden_size: int = 4096
    num_hidden_layers: int = 32
    num_attention_heads: int = 32
    num_key_value_heads: int = 8
    intermediate_size: int = 14336
    vocab_size: int = 128256


TINY = Shape(
    hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, intermediate_size=128,
    vocab_size=512,
)  # fmt: skip
"""The ``--tiny`` shape: a CPU dry run in seconds."""

TARGETS = {"aisp_iteration / greedy_generate": 1.02, "aisp_iteration seconds": 3.9}
"""The targets on an H200 at the default shape."""


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    shape = parser.add_argument_group("the model (random weights; defaults: Llama-3-8B)")
    for name, value in asdict(Shape()).items():
        shape.add_argument(f"--{name}", type=int, default=None, help=f"Default {value} ({getattr(TINY, name)} tiny).")
    shape.add_argument("--tiny", action="store_true", help="A tiny shape and workload: a CPU dry run in seconds.")
    shape.add_argument("--dtype", default=None, help="bfloat16 | float16 | float32 (default: bf16, fp32 on CPU).")
    shape.add_argument("--device", default="cuda", help="cuda, cuda:1, cpu, ...")
    work = parser.add_argument_group("the workload (defaults: the paper's shape)")
    work.add_argument("--sample_size", type=int, default=None, help="n: rows per iteration (default 32, tiny 4).")
    work.add_argument("--max_new_tokens", type=int, default=None, help="tau, forced (default 128, tiny 8).")
    work.add_argument("--prompt_length", type=int, default=None, help="Tokens of the prompt (default 300, tiny 24).")
    work.add_argument("--prompt_batch_size", type=int, default=None, help="b for Batched AISP (default 4, tiny 2).")
    work.add_argument("--max_batch_rows", type=int, default=None, help="Rows per generate call (default: all).")
    work.add_argument("--repeats", type=int, default=None, help="Timed runs per case (default 3, tiny 1).")
    work.add_argument("--warmup", type=int, default=1, help="Untimed runs per case first (default 1).")
    work.add_argument("--seed", type=int, default=0, help="Seeds the weights, the prompts and the samplers.")
    parser.add_argument("--output", default=None, help="Write the JSON here.")
    return parser


@dataclass
class Settings:
    """The resolved arguments (``--tiny`` fills what was not given)."""

    shape: Shape
    dtype: str
    device: str
    sample_size: int
    max_new_tokens: int
    prompt_length: int
    prompt_batch_size: int
    max_batch_rows: int | None
    repeats: int
    warmup: int
    seed: int
    tiny: bool


def resolve(args: argparse.Namespace) -> Settings:
    """Fills the defaults of the chosen size and validates every number (errors name the flag and the fix)."""
    base = TINY if args.tiny else Shape()
    shape = Shape(**{k: v if (v := getattr(args, k)) is not None else d for k, d in asdict(base).items()})
    defaults = dict(sample_size=(4, 32), max_new_tokens=(8, 128), prompt_length=(24, 300), prompt_batch_size=(2, 4))
    defaults["repeats"] = (1, 3)
    picked = {k: getattr(args, k) if getattr(args, k) is not None else pair[0 if args.tiny else 1]
              for k, pair in defaults.items()}  # fmt: skip
    checks = {**asdict(shape), **picked, "warmup": args.warmup}
    if args.max_batch_rows is not None:
        checks["max_batch_rows"] = args.max_batch_rows
    for name, value in checks.items():
        low = 0 if name == "warmup" else 1
        if value < low:
            _fail(f"`--{name}` must be >= {low}, got {value}; pass a larger value.")
    if shape.hidden_size % shape.num_attention_heads or shape.num_attention_heads % shape.num_key_value_heads:
        _fail(
            f"`--hidden_size` {shape.hidden_size} must be a multiple of `--num_attention_heads` "
            f"{shape.num_attention_heads}, itself a multiple of `--num_key_value_heads` {shape.num_key_value_heads}."
        )
    shortest = picked["prompt_length"] - 8 * (picked["prompt_batch_size"] - 1)
    if shortest < 2:
        _fail(
            f"`--prompt_length` {picked['prompt_length']} leaves {shortest} tokens to the last of "
            f"{picked['prompt_batch_size']} prompts (each is 8 shorter than the one before); raise it to at least "
            f"{2 + 8 * (picked['prompt_batch_size'] - 1)}."
        )
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        _fail(f"`--device {args.device}` but CUDA is not available here; pass `--device cpu`.")
    dtype = args.dtype or ("float32" if device.type == "cpu" else "bfloat16")
    if dtype not in ("bfloat16", "float16", "float32"):
        _fail(f"`--dtype {dtype}` is not one of bfloat16, float16, float32.")
    return Settings(shape, dtype, str(device), **picked, max_batch_rows=args.max_batch_rows, warmup=args.warmup,
                    seed=args.seed, tiny=args.tiny)  # fmt: skip


def build_model(settings: Settings) -> torch.nn.Module:
    """A Llama model with random weights, built on its device in its dtype, with neither an EOS nor a BOS token."""
    shape = settings.shape
    config = LlamaConfig(**asdict(shape), max_position_embeddings=8192, tie_word_embeddings=False,
                         pad_token_id=PAD_ID, bos_token_id=None, eos_token_id=None)  # fmt: skip
    dtype = getattr(torch, settings.dtype)
    torch.manual_seed(settings.seed)
    with torch.device(settings.device):  # initialised where it runs: no 16 GB detour through the CPU
        try:
            model = AutoModelForCausalLM.from_config(config, dtype=dtype)
        except TypeError:  # transformers older than `dtype=`
            model = AutoModelForCausalLM.from_config(config, torch_dtype=dtype)
    model = model.to(device=settings.device, dtype=dtype).eval()
    model.generation_config = GenerationConfig(pad_token_id=PAD_ID, eos_token_id=None, bos_token_id=None)
    return model


def build_tokenizer(vocab_size: int) -> PreTrainedTokenizerFast:
    """A word-level tokenizer over the whole vocabulary (``t1`` ... ``t{V-1}``), pad ``<pad>`` = 0, no EOS: decoding
    is one lookup per token, as cheap as a real tokenizer's."""
    vocab = {"<pad>": PAD_ID} | {f"t{i}": i for i in range(1, vocab_size)}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<pad>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="<pad>", padding_side="left")


def make_prompts(settings: Settings) -> list[list[int]]:
    """``b`` random prompts, 8 tokens shorter each (Batched AISP pads them on the left); ids avoid the pad id."""
    generator = torch.Generator().manual_seed(settings.seed)
    lengths = [settings.prompt_length - 8 * j for j in range(settings.prompt_batch_size)]
    return [torch.randint(1, settings.shape.vocab_size, (n,), generator=generator).tolist() for n in lengths]


def cheap_reward(texts: list[str]) -> list[float]:
    """A Python reward costing microseconds a text: the share of distinct tokens."""
    return [len(set(words := t.split())) / max(len(words), 1) for t in texts]


def _fail(message: str) -> NoReturn:
    """A user error: one line on stderr, exit status 2 (as argparse)."""
    print(f"bench_gpu: {message}", file=sys.stderr)
    raise SystemExit(2)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class _NoModelDecoder:
    """A `Decoder` that runs no model: it materialises the noise and moves it to the device in the model's dtype, as
    `HFDecoder` and its hook do, and returns ``tau`` copies of token 1 per row. AISP on it costs what an iteration
    spends outside the model (noise draws, weights, mean update, decoding to text, scoring)."""

    def __init__(self, model: torch.nn.Module, device: torch.device):
        self.dtype, self.device = next(model.parameters()).dtype, device

    def greedy(
        self,
        rows: list[list[int]],
        horizons: list[int],
        config: GenerationConfig,
        perturbations: torch.Tensor | PrelogitNoise | None = None,
        **model_kwargs: Any,
    ) -> list[list[int]]:
        dense = perturbations.dense() if isinstance(perturbations, PrelogitNoise) else perturbations
        if dense is not None:
            dense.to(device=self.device, dtype=self.dtype)
        return [[1] * tau for tau in horizons]

    def sample(
        self, rows: list[list[int]], horizons: list[int], config: GenerationConfig, seed: int, **model_kwargs: Any
    ) -> list[list[int]]:
        return [[1] * tau for tau in horizons]


def measure(model: torch.nn.Module, tokenizer: Any, settings: Settings) -> dict[str, Any]:
    """Warm-up, then interleaved timed repetitions of every case; returns seconds, medians, ratios and peak memory."""
    device = torch.device(settings.device)
    n, tau, b, rows_cap = (
        settings.sample_size,
        settings.max_new_tokens,
        settings.prompt_batch_size,
        settings.max_batch_rows,
    )
    prompts = make_prompts(settings)
    horizon = LengthSampler(tau, tau + 1)
    greedy = GenerationConfig(do_sample=False, num_beams=1, max_new_tokens=tau, pad_token_id=PAD_ID, eos_token_id=None)
    top_p = copy.deepcopy(greedy)
    top_p.update(do_sample=True, top_p=0.9, top_k=0, temperature=1.0)  # BestOfNSampler's BoN (top-p)
    common = dict(sample_size=n, seed=settings.seed, generation_config=greedy, max_batch_rows=rows_cap)
    aisp = AISPSampler(model, tokenizer, cheap_reward, horizon, n_iterations=1, **common)
    aisp_batched = AISPSampler(model, tokenizer, cheap_reward, horizon, n_iterations=1, prompt_batch_size=b, **common)
    bon = BestOfNSampler(model, tokenizer, cheap_reward, horizon, n, settings.seed, 1, top_p, max_batch_rows=rows_cap)
    decoder = HFDecoder(model, PAD_ID, rows_cap)
    host_only = AISPSampler(model, tokenizer, cheap_reward, horizon, n_iterations=1, **common)
    host_only.decoder = _NoModelDecoder(model, device)  # the samplers' decoding seam: AISP without the model

    def left_padded(queries: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        return decoder.left_pad([q for q in queries for _ in range(n)])  # (rows, L): n rows per prompt

    single, batched = left_padded(prompts[:1]), left_padded(prompts)

    def generate(inputs: tuple[torch.Tensor, torch.Tensor]) -> set[int]:
        ids, mask = inputs
        step, lengths = rows_cap or ids.shape[0], set()
        with torch.no_grad():
            for lo in range(0, ids.shape[0], step):
                out = model.generate(input_ids=ids[lo : lo + step], attention_mask=mask[lo : lo + step],
                                     generation_config=greedy)  # fmt: skip
                lengths.add(int(out.shape[1] - ids.shape[1]))
        return lengths

    def searched(results: list[Any]) -> set[int]:
        return {len(s.completion_ids) for r in results for s in r.samples}

    cases: dict[str, tuple[int, Callable[[], set[int]]]] = {
        "aisp_iteration": (n, lambda: searched(aisp.search(prompts[0]))),
        "greedy_generate": (n, lambda: generate(single)),
        "decoder_greedy": (n, lambda: {len(c) for c in decoder.greedy([prompts[0]] * n, [tau] * n, greedy)}),
        "bon_iteration": (n, lambda: searched(bon.search(prompts[0]))),
        "aisp_host_only": (n, lambda: searched(host_only.search(prompts[0]))),
        "batched_aisp_iteration": (b * n, lambda: searched(aisp_batched.search(prompts))),
        "batched_greedy_generate": (b * n, lambda: generate(batched)),
    }
    names = list(cases)
    lengths: dict[str, set[int]] = {name: set() for name in names}
    for _ in range(settings.warmup):
        for name in names:
            lengths[name] |= cases[name][1]()
    seconds: dict[str, list[float]] = {name: [] for name in names}
    peak: dict[str, int | None] = dict.fromkeys(names)
    for r in range(settings.repeats):
        shift = r % len(names)
        for name in names[shift:] + names[:shift]:  # rotated: each case sees the same machine state on average
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            _sync(device)
            start = time.perf_counter()
            lengths[name] |= cases[name][1]()
            _sync(device)
            seconds[name].append(time.perf_counter() - start)
            if device.type == "cuda":
                peak[name] = max(peak[name] or 0, torch.cuda.max_memory_allocated(device))
    median = {name: statistics.median(values) for name, values in seconds.items()}
    ratios = {
        "aisp_iteration / greedy_generate": median["aisp_iteration"] / median["greedy_generate"],
        "aisp_iteration / decoder_greedy": median["aisp_iteration"] / median["decoder_greedy"],
        "aisp_iteration / bon_iteration": median["aisp_iteration"] / median["bon_iteration"],
        "bon_iteration / greedy_generate": median["bon_iteration"] / median["greedy_generate"],
        "aisp_host_only / greedy_generate": median["aisp_host_only"] / median["greedy_generate"],
        "batched_aisp_iteration / batched_greedy_generate": (
            median["batched_aisp_iteration"] / median["batched_greedy_generate"]
        ),
    }
    return {
        "rows": {name: rows for name, (rows, _) in cases.items()},
        "seconds": seconds,
        "median_seconds": median,
        "peak_memory_bytes": peak,
        "ratios": ratios,
        "fixed_length": all(found == {tau} for found in lengths.values()),
        "prompt_lengths": [len(p) for p in prompts],
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Builds the model, measures, prints the markdown table and writes the JSON; returns the result."""
    settings = resolve(args)
    model = build_model(settings)
    tokenizer = build_tokenizer(settings.shape.vocab_size)
    device = torch.device(settings.device)
    weights = torch.cuda.memory_allocated(device) if device.type == "cuda" else None
    result = measure(model, tokenizer, settings)
    at_target_shape = device.type == "cuda" and not settings.tiny and settings.shape == Shape()
    result["targets"] = {
        "aisp_iteration / greedy_generate <= 1.02": (
            result["ratios"]["aisp_iteration / greedy_generate"] <= TARGETS["aisp_iteration / greedy_generate"]
            if at_target_shape
            else None
        ),
        "aisp_iteration <= 3.9 s": (
            result["median_seconds"]["aisp_iteration"] <= TARGETS["aisp_iteration seconds"] if at_target_shape else None
        ),
    }  # None: not the H200 target's shape and device, nothing to compare
    result["settings"] = asdict(settings) | {
        "parameters": sum(p.numel() for p in model.parameters()),
        "weights_memory_bytes": weights,
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "torch_threads": torch.get_num_threads(),
    }
    print(table(result))
    if args.output:
        output = Path(args.output)
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(json.dumps(result, indent=2))
    return result


def table(result: dict[str, Any]) -> str:
    """The medians, peaks and ratios as markdown."""

    def gib(value: int | None) -> str:
        return "n/a" if value is None else f"{value / 2**30:.2f}"

    lines = ["| case | rows | median s | runs s | peak GiB |", "|---|---:|---:|---|---:|"]
    for name, median in result["median_seconds"].items():
        runs = ", ".join(f"{t:.3f}" for t in result["seconds"][name])
        lines.append(
            f"| {name} | {result['rows'][name]} | {median:.3f} | {runs} | {gib(result['peak_memory_bytes'][name])} |"
        )
    lines += ["", "| ratio | value |", "|---|---:|"]
    lines += [f"| {name} | {value:.3f} |" for name, value in result["ratios"].items()]
    s = result.get("settings")
    if s is not None:
        shape = s["shape"]
        model = (
            f"{s['device_name']}, {s['dtype']}, {s['parameters'] / 1e6:,.1f}M parameters "
            f"(hidden {shape['hidden_size']}, {shape['num_hidden_layers']} layers, "
            f"{shape['num_attention_heads']}/{shape['num_key_value_heads']} heads, vocab {shape['vocab_size']})"
        )
        work = (
            f"n={s['sample_size']}, tau={s['max_new_tokens']} forced (fixed length verified: "
            f"{result['fixed_length']}), b={s['prompt_batch_size']}, prompts of {result['prompt_lengths']} tokens, "
            f"max_batch_rows={s['max_batch_rows']}, {s['warmup']} warm-up + {s['repeats']} timed runs per case"
        )
        lines += ["", f"{model}, {work}; targets: {result['targets']}."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    result = run(make_parser().parse_args(argv))
    if not all(math.isfinite(v) and v > 0 for v in result["ratios"].values()):
        _fail("a ratio is not a finite positive number; see the table above.")
    return result


if __name__ == "__main__":
    main()
