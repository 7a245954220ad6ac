"""`aisp-trl generate`: AISP next to plain greedy decoding, per prompt, on the embedded default or your model.

aisp-trl generate                                   # SmolLM2-135M-Instruct + VADER, built-in prompts
aisp-trl generate --num_prompts 4 --n_iterations 8 --lam 0.2
aisp-trl generate --model_name_or_path Qwen/Qwen2.5-0.5B-Instruct \
    --reward OpenAssistant/reward-model-deberta-v3-large-v2
aisp-trl generate --config my_run.yaml              # any of the flags as YAML keys
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from trl import TrlParser

from .config import AISPConfig
from .models import EMBEDDED_MODEL, load_model_and_tokenizer
from .pipeline import build_reward
from .prompts import apply_chat_template, builtin_prompts
from .sampler import AISPSampler, GreedySampler, LengthSampler


@dataclass
class GenerateArguments:
    """What to run AISP on; the AISP hyper-parameters come from `AISPConfig`."""

    model_name_or_path: str = field(
        default=EMBEDDED_MODEL,
        metadata={"help": f"Causal LM: '{EMBEDDED_MODEL}' (embedded, offline) or a Hub id / local folder."},
    )
    reward: str = field(
        default="vader",
        metadata={"help": "'vader' (sentiment of the completion) or a sequence-classification reward model path."},
    )
    reward_max_length: int = field(default=1024, metadata={"help": "Reward-model inputs are truncated to this."})
    num_prompts: int = field(default=8, metadata={"help": "How many built-in prompts to run (ignored with a file)."})
    prompts_file: str | None = field(
        default=None, metadata={"help": "A text file with one prompt per line, instead of the built-in prompts."}
    )
    max_new_tokens: int = field(default=32, metadata={"help": "Horizon tau: new tokens per response."})
    use_chat_template: bool = field(
        default=True, metadata={"help": "Wrap each prompt as a user message with the tokenizer's chat template."}
    )
    dtype: str = field(default="float32", metadata={"help": "Model dtype: float32, bfloat16 or float16."})
    device: str | None = field(default=None, metadata={"help": "cpu, cuda, cuda:1, ... (default: cuda if present)."})
    output_file: str | None = field(default=None, metadata={"help": "Write every record (JSON) to this path."})

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1:
            raise ValueError(f"`max_new_tokens` must be >= 1, got {self.max_new_tokens}.")
        if self.reward_max_length < 1:
            raise ValueError(f"`reward_max_length` must be >= 1, got {self.reward_max_length}.")
        if self.prompts_file is not None and not Path(self.prompts_file).is_file():
            raise ValueError(f"`prompts_file` {self.prompts_file!r} does not exist; pass a text file path.")


def make_parser() -> TrlParser:
    return TrlParser((GenerateArguments, AISPConfig))


def run(args: GenerateArguments, config: AISPConfig) -> list[dict]:
    """Greedy and AISP responses for each prompt; prints them and returns one record per prompt."""
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    model, tokenizer = load_model_and_tokenizer(args.model_name_or_path, dtype=args.dtype, device=device)
    reward = build_reward(args.reward, device, args.reward_max_length)
    if args.prompts_file:
        prompts = [line.strip() for line in Path(args.prompts_file).read_text().splitlines() if line.strip()]
    else:
        prompts = builtin_prompts(args.num_prompts)
    texts = apply_chat_template(tokenizer, prompts) if args.use_chat_template else prompts
    queries = [tokenizer(t, add_special_tokens=not args.use_chat_template).input_ids for t in texts]
    horizon = LengthSampler(args.max_new_tokens, args.max_new_tokens + 1)

    greedy = GreedySampler(model, tokenizer, reward, horizon).search(queries, prompts=prompts)
    start = time.perf_counter()
    sampler = AISPSampler.from_config(model, tokenizer, reward, horizon, config, show_progress=True)
    aisp = sampler.search(queries, prompts=prompts)
    seconds = time.perf_counter() - start

    records = []
    for i, (prompt, g, a) in enumerate(zip(prompts, greedy, aisp, strict=True), start=1):
        print(f"\n[{i}/{len(prompts)}] {prompt}")
        print(f"  greedy (reward {g.best.reward:+.3f}): {_one_line(g.best.completion)}")
        print(f"  AISP   (reward {a.best.reward:+.3f}): {_one_line(a.best.completion)}")
        records.append({"prompt": prompt, "greedy": g.to_dict(), "aisp": a.to_dict()})
    mean_greedy = sum(g.best.reward for g in greedy) / len(greedy)
    mean_aisp = sum(a.best.reward for a in aisp) / len(aisp)
    print(
        f"\nmean reward over {len(prompts)} prompts: greedy {mean_greedy:+.3f} | AISP {mean_aisp:+.3f} "
        f"(n={config.sample_size}, kappa={config.n_iterations}, sigma2={config.sigma2}, lam={config.lam}, "
        f"alpha={config.alpha}; AISP took {seconds:.1f} s, {seconds / len(prompts):.1f} s per prompt)"
    )
    if args.output_file:
        Path(args.output_file).parent.mkdir(parents=True, exist_ok=True)
        Path(args.output_file).write_text(json.dumps(records, indent=2))
    return records


def _one_line(text: str) -> str:
    return " ".join(text.split())


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] != "generate":
        print("usage: aisp-trl generate [--help] [--config CONFIG.yaml] [--flags]", file=sys.stderr)
        raise SystemExit(2)
    args, config = make_parser().parse_args_and_config(argv[1:])
    run(args, config)


if __name__ == "__main__":
    main()
