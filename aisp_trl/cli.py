"""`aisp-trl generate`: AISP next to plain greedy decoding, per prompt, on the embedded default or your model.
`aisp-trl serve`: AISP behind an OpenAI-compatible endpoint (see `aisp_trl.serve.cli`).

aisp-trl generate                                   # SmolLM2-135M-Instruct + VADER, built-in prompts
aisp-trl generate --num_prompts 4 --n_iterations 8 --lam 0.2
aisp-trl generate --model_name_or_path Qwen/Qwen2.5-0.5B-Instruct \
    --reward OpenAssistant/reward-model-deberta-v3-large-v2
aisp-trl generate --config my_run.yaml              # any of the flags as YAML keys
aisp-trl generate --help                            # every flag

Errors in what you pass (a missing folder, an empty prompts file, a device this machine lacks, ...) print one line
and exit with status 2; `--debug` (or the environment variable AISP_TRL_DEBUG=1) shows the traceback instead.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch
from trl import TrlParser

from .config import AISPConfig
from .models import check_device, load_model_and_tokenizer
from .pipeline.arguments import ModelArguments, RewardArguments
from .prompts import apply_chat_template, builtin_prompts
from .rewards import build_reward
from .samplers import AISPSampler, GreedySampler, LengthSampler


@dataclass
class GenerateArguments(ModelArguments, RewardArguments):
    """What to run AISP on (model, reward, prompts, horizon); the AISP hyper-parameters come from `AISPConfig`."""

    num_prompts: int = field(default=8, metadata={"help": "How many built-in prompts to run (ignored with a file)."})
    prompts_file: str | None = field(
        default=None,
        metadata={
            "help": "A text file with one prompt per line, or a .json / .jsonl file with a `prompt` field, instead of "
            "the built-in prompts."
        },
    )
    max_new_tokens: int = field(default=32, metadata={"help": "Horizon tau: new tokens per response."})
    use_chat_template: bool = field(
        default=True, metadata={"help": "Wrap each prompt as a user message with the tokenizer's chat template."}
    )
    output_file: str | None = field(default=None, metadata={"help": "Write every record (JSON) to this path."})

    def __post_init__(self) -> None:
        super().__post_init__()  # the model and reward fields
        if self.max_new_tokens < 1:
            raise ValueError(f"`max_new_tokens` must be >= 1, got {self.max_new_tokens}.")
        if self.prompts_file is not None and not Path(self.prompts_file).is_file():
            raise ValueError(f"`prompts_file` {self.prompts_file!r} does not exist; pass a text file path.")


PROG = "aisp-trl"
DEBUG_ENV = "AISP_TRL_DEBUG"
DEFAULT_SEED = 0
USER_ERRORS = (ValueError, TypeError, OSError)
"""What bad input raises (``FileNotFoundError`` and transformers' "not a model folder" are ``OSError``s): printed as
one line, the traceback only with ``--debug`` or ``AISP_TRL_DEBUG=1``."""
COMMANDS = {
    "generate": "AISP next to plain greedy decoding, per prompt (embedded SmolLM2 or your model)",
    "serve": "AISP behind an OpenAI-compatible endpoint (/v1/chat/completions, /v1/completions)",
}


def debug_requested(argv: list[str] | None = None) -> bool:
    """``--debug`` in ``argv``, or the environment variable ``AISP_TRL_DEBUG`` set to anything but ``""`` / ``0``."""
    return "--debug" in (argv or []) or os.environ.get(DEBUG_ENV, "").strip().lower() not in ("", "0", "false", "no")


@contextlib.contextmanager
def one_line_errors(prog: str = PROG, debug: bool | None = None) -> Iterator[None]:
    """Turns user errors (`USER_ERRORS`) raised in the block into one line on stderr and exit status 2.

    The line goes to stderr from the failing process itself, so it stays visible under ``accelerate launch``
    (above accelerate's own report of the failed process). With ``debug`` (default: `debug_requested`), the error
    propagates with its traceback.

    Example:
        ```python
        if __name__ == "__main__":
            with one_line_errors("distill_aisp.py"):
                main(*make_parser().parse_args_and_config())
        ```
    """
    try:
        yield
    except USER_ERRORS as error:
        if debug or (debug is None and debug_requested(sys.argv[1:])):
            raise
        how = f"--debug or {DEBUG_ENV}=1" if prog.startswith(PROG) else f"{DEBUG_ENV}=1"
        print(f"{prog}: error: {error} (traceback: {how})", file=sys.stderr, flush=True)
        raise SystemExit(2) from None


def make_parser(prog: str = f"{PROG} generate") -> TrlParser:
    """The parser of ``aisp-trl generate``: `GenerateArguments` and `AISPConfig` (seed 0 unless given)."""
    parser = TrlParser(
        (GenerateArguments, AISPConfig),
        prog=prog,
        description=COMMANDS["generate"] + ". Every flag is also a key of the YAML file given with --config.",
        epilog=f"--config FILE.yaml: read flags from YAML. --debug (or {DEBUG_ENV}=1): tracebacks for errors.",
    )
    parser.set_defaults(seed=DEFAULT_SEED)  # runs repeat by default; a YAML `seed:` or --seed overrides it
    return parser


def make_command_parser() -> argparse.ArgumentParser:
    """The top-level parser of ``aisp-trl``: lists the subcommands."""
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Test-time alignment by adaptive importance sampling on pre-logits (AISP), for trl users.",
        epilog=f"`{PROG} COMMAND --help` lists a command's flags. Fine-tuning recipes: recipes/distill_aisp.py, "
        "recipes/aisp_dpo.py; comparison: recipes/compare.py.",
    )
    parser.add_argument("--debug", action="store_true", help=f"show tracebacks of errors (or set {DEBUG_ENV}=1)")
    commands = parser.add_subparsers(title="commands", dest="command", metavar="COMMAND")
    for name, help_text in COMMANDS.items():
        commands.add_parser(name, help=help_text, add_help=False)
    return parser


def read_prompts(args: GenerateArguments) -> list[str]:
    """The prompts of a run: ``prompts_file`` (text lines, or .json / .jsonl) or the first ``num_prompts`` built-in.

    Raises:
        ValueError: If the file holds no prompt.
    """
    if not args.prompts_file:
        return builtin_prompts(args.num_prompts)
    path = Path(args.prompts_file)
    if path.suffix in (".json", ".jsonl"):
        from .data import load_prompts, prompt_text

        return [prompt_text(p) for p in load_prompts(str(path))]
    prompts = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    if not prompts:
        raise ValueError(
            f"`prompts_file` {args.prompts_file!r} has no prompts (it is empty or blank); put one prompt per line."
        )
    return prompts


def run(args: GenerateArguments, config: AISPConfig) -> list[dict]:
    """Greedy and AISP responses for each prompt; prints them and returns one record per prompt."""
    prompts = read_prompts(args)  # bad prompts and devices fail before the model is loaded
    check_device(args.device)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    print(f"seed: {config.seed} (--seed to change)" if config.seed is not None else "seed: drawn at random")
    model, tokenizer = load_model_and_tokenizer(args.model_name_or_path, dtype=args.dtype, device=device)
    reward = build_reward(args.reward, device, args.reward_max_length)
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
        f"alpha={config.alpha}, seed={config.seed}; AISP took {seconds:.1f} s, {seconds / len(prompts):.1f} s per "
        "prompt)"
    )
    if args.output_file:
        Path(args.output_file).parent.mkdir(parents=True, exist_ok=True)
        Path(args.output_file).write_text(json.dumps(records, indent=2))
    return records


def _one_line(text: str) -> str:
    return " ".join(text.split())


def main(argv: list[str] | None = None) -> None:
    """``aisp-trl COMMAND [flags]``; user errors print one line and exit with status 2 (see `one_line_errors`)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = debug_requested(argv)
    argv = [a for a in argv if a != "--debug"]
    top = make_command_parser()
    command, _ = top.parse_known_args(argv[:1])
    if command.command is None:
        top.print_help(sys.stderr)
        raise SystemExit(2)
    with one_line_errors(f"{PROG} {command.command}", debug=debug):
        if command.command == "serve":  # imported on use: FastAPI and uvicorn load only for the server
            from .serve.cli import main as serve

            serve(argv[1:], prog=f"{PROG} serve")
            return
        args, config = make_parser().parse_args_and_config(argv[1:])
        run(args, config)


if __name__ == "__main__":
    main()
