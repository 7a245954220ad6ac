"""Method name -> sampler: the server builds its samplers through the package's method table (`build_sampler`).

`METHOD_SETTINGS` says which request fields tune each method; anything else a request sends for a method is refused.
"""

from __future__ import annotations

from typing import Any

from ..config import SEARCH_SETTINGS, AISPConfig
from ..rewards import RewardFunction
from ..samplers import registry
from ..samplers.base import SamplerBase
from ..samplers.registry import MethodOptions

METHOD_SETTINGS: dict[str, tuple[str, ...]] = {
    "aisp": SEARCH_SETTINGS,
    "bon_top_p": ("temperature", "top_p"),
    "bon_gaussian": ("sigma2",),
    "greedy": (),
}
"""The samplers a request may pick (``method``) and the settings each takes besides the budget, horizon and seed."""

SEARCHES_BUDGET: dict[str, bool] = {"aisp": True, "bon_top_p": True, "bon_gaussian": True, "greedy": False}
"""Whether a method spends a sample budget (greedy decodes one response and takes no budget)."""


def build_sampler(
    method: str,
    model: Any,
    tokenizer: Any,
    reward: RewardFunction,
    horizon: int,
    *,
    sample_size: int,
    n_iterations: int,
    seed: int,
    prompt_batch_size: int,
    settings: dict[str, Any],
) -> SamplerBase:
    """A fresh sampler for one batch, from the package's method table (`aisp_trl.samplers.registry.METHODS`), so
    per-query call counts, which enter the noise streams, start at zero.

    Args:
        method (`str`): a key of `METHOD_SETTINGS`.
        model, tokenizer, reward: what every sampler takes (a ``vllm.LLM`` works as ``model``).
        horizon (`int`): max new tokens of every query of the batch.
        sample_size, n_iterations (`int`): the budget N = sample_size * n_iterations (best-of-n draws all N at once).
        seed (`int`): the seed of every query's noise stream.
        prompt_batch_size (`int`): queries decoded together (the batch's distinct queries).
        settings (`dict`): the method's settings from `METHOD_SETTINGS` that the request gave.

    Returns:
        The sampler; its ``search(queries, prompts=...)`` returns one `AISPResult` per query.
    """
    config = AISPConfig(
        sample_size=sample_size,
        n_iterations=n_iterations,
        seed=seed,
        prompt_batch_size=prompt_batch_size,
        **(settings if method == "aisp" else {}),
    )
    options = MethodOptions(
        top_p=settings.get("top_p", 0.9),
        temperature=settings.get("temperature", 1.0),
        bon_sigma2=settings.get("sigma2", 0.5) if method == "bon_gaussian" else 0.5,
        bon_prompt_batch_size=prompt_batch_size,
    )
    return registry.build_sampler(method, model, tokenizer, reward, horizon, config, options)


def rows_per_query(method: str, sample_size: int, n_iterations: int) -> int:
    """How many consecutive rows one query brings to a scoring call of its method's sampler."""
    if method == "greedy":
        return 1
    return sample_size if method == "aisp" else sample_size * n_iterations
