"""`METHODS`: the one table from a method name to its label and sampler builder, used by the recipes, `compare`, the
benchmarks and the server.

A new baseline is one module in `aisp_trl/samplers/` plus one entry here: a `MethodSpec` whose ``build`` turns the
shared inputs (model, tokenizer, reward, horizon, the AISP budget in an `AISPConfig`, and the baselines' knobs in
`MethodOptions`) into a sampler. Every best-of-n method gets ``N = sample_size * n_iterations`` samples.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from transformers import GenerationConfig

from ..config import AISPConfig
from ..decoding.vllm import is_vllm_engine
from ..hooks import generation_model
from ..rewards.base import RewardFunction
from .aisp import AISPSampler
from .args import ARGSSampler
from .base import LengthSampler, SamplerBase
from .best_of_n import BestOfNSampler, GaussianBestOfNSampler
from .greedy import AmortizedSampler, GreedySampler, REControlSampler

__all__ = ["METHODS", "MethodOptions", "MethodSpec", "build_sampler", "method_label"]


@dataclass(frozen=True)
class MethodOptions:
    """The baselines' own settings (AISP's come from `AISPConfig`); the defaults are the package's baselines.

    Attributes:
        top_p, temperature: BoN (top-p)'s nucleus mass and temperature.
        bon_sigma2: BoN (N)'s noise variance: 0.5, the paper's best (BoN (N) is the paper's baseline, i.i.d.
            noise, whatever AISP's own proposal and sigma2 are).
        bon_prompt_batch_size: BoN (N)'s prompts per batch; ``None`` uses the `AISPConfig`'s ``prompt_batch_size``.
        args_top_k, args_weight: ARGS-greedy's candidates per step and reward weight.
        value_model_path, re_control_n_steps, re_control_step_size: RE-Control's value model and test-time ascent.
        controller_path, controller_scale: the amortized AISP controller and its scale.
    """

    top_p: float = 0.9
    temperature: float = 1.0
    bon_sigma2: float = 0.5
    bon_prompt_batch_size: int | None = None
    args_top_k: int = 8
    args_weight: float = 1.0
    value_model_path: str | None = None
    re_control_n_steps: int = 30
    re_control_step_size: float = 1.0
    controller_path: str | None = None
    controller_scale: float = 1.0


Builder = Callable[[Any, Any, RewardFunction, LengthSampler, AISPConfig, MethodOptions], SamplerBase]


@dataclass(frozen=True)
class MethodSpec:
    """One method of the table.

    Attributes:
        label: its name in tables and plots (the paper's).
        build: ``(model, tokenizer, reward, horizon, config, options) -> sampler``.
        batches_prompts: whether its ``search`` decodes several prompts together (``config.prompt_batch_size``).
        needs_module: the `MethodOptions` field naming the trained module it decodes with, or ``None``.
        training_recipe: the recipe that trains that module.
    """

    label: str
    build: Builder
    batches_prompts: bool
    needs_module: str | None = None
    training_recipe: str | None = None


def _top_p_config(model: Any, options: MethodOptions) -> GenerationConfig:
    base = None if is_vllm_engine(model) else getattr(generation_model(model), "generation_config", None)
    config = copy.deepcopy(base) if base is not None else GenerationConfig()
    config.update(do_sample=True, top_p=options.top_p, top_k=0, temperature=options.temperature)
    return config


def _aisp(model, tokenizer, reward, horizon, config, options) -> SamplerBase:
    return AISPSampler.from_config(model, tokenizer, reward, horizon, config)


def _bon_top_p(model, tokenizer, reward, horizon, config, options) -> SamplerBase:
    sampling = _top_p_config(model, options)
    return BestOfNSampler(
        model, tokenizer, reward, horizon, config.total_samples, config.seed, 1, sampling,
        kl_coef=config.kl_coef, kl_per_token=config.kl_per_token,
    )  # fmt: skip


def _bon_aisp_proposal(model, tokenizer, reward, horizon, config, options) -> SamplerBase:
    # AISP's first iteration at the whole budget: N draws around U = 0 from AISP's own proposal, sigma2 and rho,
    # best by reward. AISP minus this isolates what adapting the mean adds over the proposal
    control = dataclasses.replace(config, sample_size=config.total_samples, n_iterations=1)
    return AISPSampler.from_config(model, tokenizer, reward, horizon, control)


def _bon_gaussian(model, tokenizer, reward, horizon, config, options) -> SamplerBase:
    return GaussianBestOfNSampler(
        model,
        tokenizer,
        reward,
        horizon,
        sample_size=config.total_samples,
        seed=config.seed,
        sigma2=options.bon_sigma2,
        prompt_batch_size=options.bon_prompt_batch_size or config.prompt_batch_size,
        kl_coef=config.kl_coef,
        kl_per_token=config.kl_per_token,
    )


def _args(model, tokenizer, reward, horizon, config, options) -> SamplerBase:
    return ARGSSampler(model, tokenizer, reward, horizon, top_k=options.args_top_k, weight=options.args_weight)


def _greedy(model, tokenizer, reward, horizon, config, options) -> SamplerBase:
    return GreedySampler(model, tokenizer, reward, horizon, prompt_batch_size=config.prompt_batch_size)


def _with_module(kind: str, path: str | None, build: Callable[[Any], SamplerBase]) -> SamplerBase:
    """A sampler that decodes with a trained module (loaded from ``path``); its training record rides along as
    ``training_info`` (the one-off cost `compare` reports)."""
    from ..controllers import load_module

    module, info = load_module(path, kind=kind)
    sampler = build(module)
    sampler.training_info = info
    return sampler


def _re_control(model, tokenizer, reward, horizon, config, options) -> SamplerBase:
    steps, size, batch = options.re_control_n_steps, options.re_control_step_size, config.prompt_batch_size
    return _with_module(
        "value",
        options.value_model_path,
        lambda value: REControlSampler(
            model, tokenizer, reward, horizon, value, n_steps=steps, step_size=size, prompt_batch_size=batch
        ),
    )


def _amortized(model, tokenizer, reward, horizon, config, options) -> SamplerBase:
    scale, batch = options.controller_scale, config.prompt_batch_size
    return _with_module(
        "controller",
        options.controller_path,
        lambda controller: AmortizedSampler(
            model, tokenizer, reward, horizon, controller, scale=scale, prompt_batch_size=batch
        ),
    )


METHODS: dict[str, MethodSpec] = {
    "aisp": MethodSpec("AISP", _aisp, batches_prompts=True),
    "bon_top_p": MethodSpec("BoN (top-p)", _bon_top_p, batches_prompts=False),
    "bon_gaussian": MethodSpec("BoN (N)", _bon_gaussian, batches_prompts=True),
    "bon_aisp_proposal": MethodSpec("BoN (AISP's proposal)", _bon_aisp_proposal, batches_prompts=True),
    "args": MethodSpec("ARGS-greedy", _args, batches_prompts=False),
    "greedy": MethodSpec("greedy", _greedy, batches_prompts=True),
    "re_control": MethodSpec(
        "RE-Control", _re_control, True, needs_module="value_model_path", training_recipe="recipes/re_control.py"
    ),
    "amortized": MethodSpec(
        "amortized AISP", _amortized, True, needs_module="controller_path", training_recipe="recipes/amortize_aisp.py"
    ),
}
"""Method name -> `MethodSpec`, in the order tables list them."""


def method_label(method: str) -> str:
    """The table label of ``method`` (the name itself for a method not in `METHODS`, e.g. a benchmark variant)."""
    spec = METHODS.get(method)
    return spec.label if spec else method


def build_sampler(
    method: str,
    model: Any,
    tokenizer: Any,
    reward: RewardFunction,
    max_new_tokens: int,
    config: AISPConfig,
    options: MethodOptions | None = None,
) -> SamplerBase:
    """The sampler of ``method`` with the budget of ``config`` and a fixed horizon of ``max_new_tokens``.

    Raises:
        ValueError: ``method`` is not in `METHODS`.
    """
    if method not in METHODS:
        raise ValueError(f"`method` must be one of {list(METHODS)}, got {method!r}.")
    horizon = LengthSampler(max_new_tokens, max_new_tokens + 1)
    return METHODS[method].build(model, tokenizer, reward, horizon, config, options or MethodOptions())
