"""The LM head applied outside the model: float32 logits from pre-logits, with the transforms some causal LMs apply
after the head, and the log-probabilities of given tokens from recorded pre-logits.

Used where the base model's distribution is needed at pre-logits captured by a hook: the metrics (KL of a
perturbation, token flips) and the decoders' base NLL of each decoded answer (the KL-regularised objective).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .hooks import find_output_layer, unwrap_model

__all__ = ["finalize_logits", "float32_head", "token_logprobs"]


def float32_head(head: nn.Module, hidden: Tensor) -> Tensor:
    """``W z + b`` in float32 for `(N, d)` float32 pre-logits. A plain ``nn.Linear`` is applied with float32 copies
    of its parameters; other heads (a PEFT LoRA layer, an offloaded or hooked module) run as they are, in their
    dtype, and only their output is cast."""
    weight = getattr(head, "weight", None)
    plain = (
        type(head) is nn.Linear
        and not (head._forward_hooks or head._forward_pre_hooks)
        and isinstance(weight, Tensor)
        and weight.device.type != "meta"
    )
    if not plain:
        dtype = weight.dtype if isinstance(weight, Tensor) else hidden.dtype
        return head(hidden.to(dtype)).float()
    bias = head.bias.float() if head.bias is not None else None
    return F.linear(hidden, weight.float(), bias)


def finalize_logits(model: nn.Module, logits: Tensor) -> Tensor:
    """What some causal LMs do after the LM head: Gemma's soft-capping, Cohere's and Granite's scaling."""
    config = getattr(unwrap_model(model), "config", None)
    scale = getattr(config, "logit_scale", None)  # Cohere: logits * scale
    if isinstance(scale, int | float) and not isinstance(scale, bool):
        logits = logits * scale
    divisor = getattr(config, "logits_scaling", None)  # Granite: logits / scaling
    if isinstance(divisor, int | float) and not isinstance(divisor, bool) and divisor:
        logits = logits / divisor
    cap = getattr(config, "final_logit_softcapping", None)  # Gemma 2/3: cap * tanh(logits / cap)
    if isinstance(cap, int | float) and not isinstance(cap, bool) and cap:
        logits = torch.tanh(logits / cap) * cap
    return logits


@torch.no_grad()
def token_logprobs(model: nn.Module, prelogits: Tensor, tokens: Tensor, chunk: int = 512) -> Tensor:
    """``log softmax(head(z_p))[y_p]`` under the unperturbed model, in float32, for pre-logits `(P, d)` and tokens
    `(P,)`; ``chunk`` positions at a time, so memory stays at `(chunk, V)` logits.

    Returns:
        `torch.Tensor` of shape `(P,)`, float32, on the pre-logits' device.
    """
    head = find_output_layer(model)
    values = []
    for lo in range(0, prelogits.shape[0], chunk):
        logits = finalize_logits(model, float32_head(head, prelogits[lo : lo + chunk].float()))  # (c, V)
        picked = logits.gather(-1, tokens[lo : lo + chunk, None].to(logits.device))[:, 0]
        values.append(picked - torch.logsumexp(logits, dim=-1))
    return torch.cat(values) if values else prelogits.new_zeros(0, dtype=torch.float32)
