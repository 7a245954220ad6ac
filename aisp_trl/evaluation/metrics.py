"""Model-based metrics of the paper: KL from the base model (Eq. 63, D.5), token flip rate (5.4), and an answer's
per-token NLL under the base model (fluency). The text metrics are in `aisp_trl.evaluation.text`, the curves and win
rates in `aisp_trl.evaluation.curves`.

- `kl_from_base`: the single-response estimate of ``KL(P_AISP(y|x) || P_LLM(y|x))`` of Eq. 63 (D.5);
  `stepwise_kl_from_base`: the exact sum over steps of the next-token KL along the same response;
  `decode_with_mean`: the response those are measured on.
- `token_flip_rate`: fraction of steps whose argmax changes when ``v_t`` is removed, prefix fixed (5.4).
- `token_nll`: mean negative log-likelihood per token of a response under the base model (fluency).

They run ONE forward pass over ``query + response``, record the pre-logits ``z_t`` that enter the output layer
(`capture_prelogits`) and push ``z_t`` and ``z_t + u_t`` through the output layer themselves. Shapes: ``T`` response
tokens, ``d`` pre-logit width, ``V`` vocabulary size.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn
from transformers import GenerationConfig

from ..hooks import capture_prelogits, find_output_layer, generation_model, perturb_prelogits, unwrap_model
from ..lm_head import finalize_logits, float32_head

__all__ = [
    "decode_with_mean",
    "kl_from_base",
    "response_logprobs",
    "stepwise_kl_from_base",
    "token_flip_rate",
    "token_nll",
]


# ------------------------------------------------------------------------------- KL from base, token flips


def decode_with_mean(
    model: nn.Module,
    query_ids: Sequence[int] | Tensor,
    mean: Tensor,
    *,
    do_sample: bool = False,
    seed: int | None = None,
    eos_token_id: int | list[int] | None = None,
    pad_token_id: int | None = None,
) -> list[int]:
    """Decodes one response with the pre-logits shifted by a fixed mean ``U``: ``y(U)``, the response the KL is
    measured on (paper D.5).

    Greedy by default (AISP's decoding, giving ``y(U^{kappa+1})`` of section 3.2); with ``do_sample=True`` it
    samples from ``prod_t P_AISP(y_t | y_<t)`` at temperature 1 with no top-k / top-p truncation, as the paper's
    Monte Carlo KL estimate assumes. Up to ``tau = len(mean)`` new tokens; cut after the first EOS (kept).

    Args:
        model (`torch.nn.Module`): the causal LM, possibly wrapped (see `find_output_layer`).
        query_ids (`Sequence[int]` or 1-D `torch.Tensor`): the prompt tokens.
        mean (`torch.Tensor` of shape `(tau, d)`): ``U`` (e.g. ``SearchResult.final_mean``).
        do_sample (`bool`, defaults to `False`): sample instead of taking the argmax.
        seed (`int`, *optional*): seed of the sampling; the global RNG is restored afterwards.
        eos_token_id, pad_token_id: override the model's generation config.

    Returns:
        `list[int]`: the response token ids, `(T,)` with ``T <= tau``.

    Example:
        ```python
        >>> response = decode_with_mean(model, result.query_ids, result.final_mean)
        >>> kl_from_base(model, result.query_ids, response, result.final_mean)
        ```
    """
    query = _as_ids(query_ids, "query_ids")
    width = find_output_layer(model).weight.shape[1]
    if not isinstance(mean, Tensor) or mean.ndim != 2 or mean.shape[1] != width or mean.shape[0] < 1:
        shape = tuple(mean.shape) if isinstance(mean, Tensor) else type(mean).__name__
        raise ValueError(f"`mean` must be a tensor of shape (tau, {width}) with tau >= 1, got {shape}.")
    base_config = getattr(unwrap_model(model), "generation_config", None)
    config = GenerationConfig.from_dict(base_config.to_dict()) if base_config is not None else GenerationConfig()
    config.update(do_sample=do_sample, num_beams=1, num_return_sequences=1, max_new_tokens=mean.shape[0])
    config.update(temperature=None, top_p=None, top_k=None, min_p=None)
    if eos_token_id is not None:
        config.eos_token_id = eos_token_id
    if pad_token_id is not None:
        config.pad_token_id = pad_token_id
    if config.pad_token_id is None:
        config.pad_token_id = config.eos_token_id if isinstance(config.eos_token_id, int) else 0
    eos = config.eos_token_id
    eos_ids = set(eos) if isinstance(eos, list) else ({eos} if eos is not None else set())
    weight = find_output_layer(model).weight
    ids = torch.tensor([query], dtype=torch.long, device=weight.device)
    devices = [weight.device] if weight.device.type == "cuda" else []
    with torch.no_grad(), torch.random.fork_rng(devices=devices), perturb_prelogits(model, mean.unsqueeze(0)):
        if seed is not None:
            torch.manual_seed(seed)
        output = generation_model(model).generate(
            input_ids=ids, attention_mask=torch.ones_like(ids), generation_config=config
        )
    response = output[0, len(query) :].tolist()
    stop = next((t + 1 for t, token in enumerate(response) if token in eos_ids), len(response))
    return response[:stop]


def response_logprobs(
    model: nn.Module,
    query_ids: Sequence[int] | Tensor,
    response_ids: Sequence[int] | Tensor,
    perturbation: Tensor,
) -> tuple[Tensor, Tensor, Tensor]:
    """Next-token log-probabilities along a fixed response, without and with the pre-logit perturbation.

    One forward pass over ``query + response`` records the pre-logit ``z_t`` that predicts response token ``t``;
    the output layer is then applied to ``z_t`` (base model, Eq. 60) and to ``z_t + u_t`` (AISP, Eq. 61). Steps
    beyond the perturbation's horizon get ``u_t = 0``, as during decoding. A final-logit soft-capping (Gemma 2/3)
    or logit scaling (Cohere, Granite) configured on the model is applied to both, and the base logits are
    checked against the model's own forward.

    Args:
        model (`torch.nn.Module`): the causal LM, possibly wrapped (see `find_output_layer`); put it in eval mode.
        query_ids (`Sequence[int]` or 1-D `torch.Tensor`): the prompt tokens, shape `(L_q,)`.
        response_ids (`Sequence[int]` or 1-D `torch.Tensor`): the response tokens, shape `(T,)`, T >= 1.
        perturbation (`torch.Tensor` of shape `(tau, d)`): ``u_1..u_tau`` (e.g. ``SearchResult.final_mean``).

    Returns:
        `tuple` of the base log-probs `(T, V)`, the perturbed log-probs `(T, V)` (both float64 on CPU) and the
        response ids `(T,)` (long, CPU).
    """
    query = _as_ids(query_ids, "query_ids")
    response = _as_ids(response_ids, "response_ids")
    base, perturbed = _response_logits(model, query, response, perturbation)
    return (
        torch.log_softmax(base, dim=-1),
        torch.log_softmax(perturbed, dim=-1),
        torch.tensor(response, dtype=torch.long),
    )


def kl_from_base(
    model: nn.Module,
    query_ids: Sequence[int] | Tensor,
    response_ids: Sequence[int] | Tensor,
    mean: Tensor,
) -> float:
    """The paper's KL estimate (Eq. 63): ``sum_t log P_AISP(y_t | y_<t) - log P_LLM(y_t | y_<t)``.

    For a response ``y`` decoded under AISP with the final mean ``U``, this is the single-sample Monte Carlo
    estimate of the sequence-level ``KL(P_AISP(y|x) || P_LLM(y|x))`` of Eq. 58 (the paper averages it over
    prompts). ``P_AISP`` is the softmax of ``W (z_t + u_t) + b``, ``P_LLM`` that of ``W z_t + b``. A single
    estimate can be negative; see `stepwise_kl_from_base` for a per-step exact, always non-negative variant.

    Args:
        model (`torch.nn.Module`): the causal LM (eval mode).
        query_ids (`Sequence[int]` or 1-D `torch.Tensor`): the prompt tokens.
        response_ids (`Sequence[int]` or 1-D `torch.Tensor`): the response decoded with ``mean``, `(T,)`.
        mean (`torch.Tensor` of shape `(tau, d)`): the mean ``U`` (``SearchResult.final_mean``); rows past ``T``
            are unused, steps past ``tau`` get ``u_t = 0``.

    Returns:
        `float`: the estimate in nats; 0.0 for a zero mean.

    Example:
        ```python
        >>> result = sampler.search(query_ids)[0]
        >>> kl_from_base(model, result.query_ids, result.best.completion_ids, result.final_mean)
        ```
    """
    base, perturbed, response = response_logprobs(model, query_ids, response_ids, mean)
    steps = torch.arange(len(response))
    return float((perturbed[steps, response] - base[steps, response]).sum())


def stepwise_kl_from_base(
    model: nn.Module,
    query_ids: Sequence[int] | Tensor,
    response_ids: Sequence[int] | Tensor,
    mean: Tensor,
) -> float:
    """``sum_t KL(P_AISP(. | y_<t) || P_LLM(. | y_<t))`` along a fixed response: exact per step, always >= 0.

    Same forward pass and distributions as `kl_from_base`, but each step's term is the full next-token KL
    ``sum_v P_AISP(v) (log P_AISP(v) - log P_LLM(v))`` instead of its one-token estimate. Its expectation over
    responses drawn from ``P_AISP`` equals the sequence KL of Eq. 58.

    Args:
        model, query_ids, response_ids, mean: as in `kl_from_base`.

    Returns:
        `float`: nats, >= 0; 0.0 for a zero mean.
    """
    base, perturbed, _ = response_logprobs(model, query_ids, response_ids, mean)
    per_step = (perturbed.exp() * (perturbed - base)).sum(dim=-1)  # (T,)
    return float(per_step.clamp(min=0.0).sum())


def token_flip_rate(
    model: nn.Module,
    query_ids: Sequence[int] | Tensor,
    response_ids: Sequence[int] | Tensor,
    perturbation: Tensor,
) -> float:
    """Fraction of steps whose greedy token changes when ``v_t`` is removed, prefix fixed (paper 5.4).

    For each step ``t`` of the response, compares ``argmax(W (z_t + v_t) + b)`` with ``argmax(W z_t + b)`` on the
    same prefix ``y_<t``. A step-wise diagnostic: it does not compare the response with an unperturbed decode.

    Args:
        model (`torch.nn.Module`): the causal LM (eval mode).
        query_ids (`Sequence[int]` or 1-D `torch.Tensor`): the prompt tokens.
        response_ids (`Sequence[int]` or 1-D `torch.Tensor`): the response, `(T,)`.
        perturbation (`torch.Tensor` of shape `(tau, d)`): the ``v_t`` the response was decoded with (a sample
            ``V^i``) or a mean ``U``; steps past ``tau`` get ``v_t = 0`` (and never flip).

    Returns:
        `float` in [0, 1]: flipped steps / T.
    """
    query = _as_ids(query_ids, "query_ids")
    response = _as_ids(response_ids, "response_ids")
    base, perturbed = _response_logits(model, query, response, perturbation)
    return float((base.argmax(dim=-1) != perturbed.argmax(dim=-1)).double().mean())


def _response_logits(
    model: nn.Module, query: list[int], response: list[int], perturbation: Tensor
) -> tuple[Tensor, Tensor]:
    """Base and perturbed final logits, each `(T, V)` float64 on CPU, from one forward over query + response."""
    head = find_output_layer(model)
    weight = head.weight  # (V, d)
    width = weight.shape[1]
    if not isinstance(perturbation, Tensor) or perturbation.ndim != 2 or perturbation.shape[1] != width:
        shape = tuple(perturbation.shape) if isinstance(perturbation, Tensor) else type(perturbation).__name__
        raise ValueError(
            f"the perturbation must be a tensor of shape (tau, d) with d = {width} (the model's pre-logit width), "
            f"got {shape}; pass e.g. `SearchResult.final_mean`."
        )
    n_query, n_steps = len(query), len(response)
    ids = torch.tensor([query + response], dtype=torch.long, device=weight.device)  # (1, L_q + T)
    forward_model = unwrap_model(model)
    with torch.no_grad(), capture_prelogits(model) as captured:
        output = forward_model(input_ids=ids, attention_mask=torch.ones_like(ids), use_cache=False)
    if len(captured) != 1 or captured[0].shape[:2] != ids.shape:
        raise RuntimeError(
            f"expected one call of the output layer over {ids.shape[1]} positions, got "
            f"{[tuple(c.shape) for c in captured]}; this model computes its logits in an unsupported way."
        )
    # z at position L_q - 1 + (t - 1) predicts response token t
    z = captured[0][0, n_query - 1 : n_query - 1 + n_steps]  # (T, d), in the model's dtype
    u = torch.zeros(n_steps, width, dtype=torch.float32, device=z.device)
    horizon = min(n_steps, perturbation.shape[0])
    u[:horizon] = perturbation[:horizon].to(device=z.device, dtype=torch.float32)
    with torch.no_grad():
        # the head in float32: bf16 / fp16 logits carry ~1e-2 relative rounding error, which the KL sums over steps
        z32 = z.float()
        logits = finalize_logits(model, float32_head(head, torch.cat([z32, z32 + u]))).double()  # (2T, V)
    base, perturbed = logits[:n_steps], logits[n_steps:]
    reference = getattr(output, "logits", None)
    if reference is not None and reference.shape[1] == ids.shape[1]:
        expected = reference[0, n_query - 1 : n_query - 1 + n_steps].double()
        tol = _LOGIT_TOLERANCE.get(z.dtype, 5e-2)  # the model's own logits are only this exact in its dtype
        if not torch.allclose(base, expected, rtol=tol, atol=tol):
            raise RuntimeError(
                "the output layer applied to the captured pre-logits does not reproduce the model's logits (max "
                f"difference {float((base - expected).abs().max()):.3g}, tolerance {tol:g} for {z.dtype}); the "
                "model transforms its logits after the LM head in a way this metric does not know (only "
                "soft-capping and logit scaling are handled)."
            )
    return base.cpu(), perturbed.cpu()


_LOGIT_TOLERANCE = {torch.float64: 1e-3, torch.float32: 1e-3, torch.bfloat16: 5e-2, torch.float16: 5e-2}


def _as_ids(ids: Sequence[int] | Tensor, name: str) -> list[int]:
    if isinstance(ids, Tensor):
        if ids.ndim != 1 or ids.is_floating_point():
            raise ValueError(f"`{name}` must be a 1-D integer tensor, got shape {tuple(ids.shape)} ({ids.dtype}).")
        ids = ids.tolist()
    if isinstance(ids, str) or not isinstance(ids, Sequence):
        raise TypeError(f"`{name}` must be a list of token ids or a 1-D tensor, got {type(ids).__name__}.")
    ids = list(ids)
    if not ids:
        raise ValueError(f"`{name}` is empty; pass at least one token id.")
    if any(isinstance(t, bool) or not isinstance(t, int) for t in ids):
        raise ValueError(f"`{name}` must hold ints (token ids), got {ids[:8]!r}...; tokenize the text first.")
    return ids


@torch.no_grad()
def token_nll(model: nn.Module, query_ids: list[int], completion_ids: list[int]) -> float:
    """Mean negative log-likelihood per token of ``completion_ids`` after ``query_ids`` under ``model`` (fluency).

    Returns:
        `float`: NaN for an empty completion.
    """
    if not completion_ids:
        return math.nan
    device = next(model.parameters()).device
    ids = torch.tensor([list(query_ids) + list(completion_ids)], device=device)
    logits = model(input_ids=ids).logits[0, len(query_ids) - 1 : -1].float()  # position t predicts token t + 1
    logp = torch.log_softmax(logits, dim=-1).gather(1, torch.tensor(completion_ids, device=device)[:, None])
    return float(-logp.mean())
