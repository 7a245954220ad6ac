"""The pre-logit hook: add ``v_t`` to the hidden state entering the output layer, only inside ``with``.

Inside ``generate`` (transformers 5.x) the output layer sees ``(B, 1, d)`` at every step, the prefill
included, because only the last position's logits are kept. A plain forward sees ``(B, T, d)``. Either
way the perturbation goes to the last position, and each call of the output layer is one generated step.
Generation settings that break "one call, one token" (prefill chunking, assisted or prompt-lookup decoding)
are detected where the call shapes show them, and raise instead of putting noise on the wrong steps.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
from torch import Tensor, nn


def unwrap_model(model: nn.Module) -> nn.Module:
    """Strips distributed and value-head wrappers down to the module that owns ``get_output_embeddings``.

    Handles ``DistributedDataParallel`` / accelerate wrappers (``.module``), ``torch.compile`` (``._orig_mod``)
    and value-head wrappers in the style of trl's old ``AutoModelForCausalLMWithValueHead``
    (``.pretrained_model`` next to ``.v_head``). PEFT models need no unwrapping: they forward
    ``get_output_embeddings`` to the base model.
    """
    seen: set[int] = set()
    while id(model) not in seen:
        seen.add(id(model))
        if hasattr(model, "v_head") and hasattr(model, "pretrained_model"):
            model = model.pretrained_model
        elif isinstance(model, nn.parallel.DistributedDataParallel | nn.DataParallel):
            model = model.module
        elif hasattr(model, "_orig_mod"):
            model = model._orig_mod
        else:
            break
    return model


def find_output_layer(model: nn.Module) -> nn.Module:
    """Returns the output layer ``W z + b`` (the LM head) of a possibly wrapped causal LM.

    Raises:
        ValueError: if the model exposes no output embeddings.
    """
    inner = unwrap_model(model)
    get_head = getattr(inner, "get_output_embeddings", None)
    head = get_head() if callable(get_head) else None
    if not isinstance(head, nn.Module):
        raise ValueError(
            f"`model` ({type(model).__name__}) has no output embeddings (get_output_embeddings() returned "
            f"{head!r}); AISP perturbs the input of the LM head, so pass a causal LM such as an "
            "`AutoModelForCausalLM`, a PEFT model around one, or a value-head wrapper with `.pretrained_model`."
        )
    return head


def generation_model(model: nn.Module) -> nn.Module:
    """The object whose ``generate`` to call: value-head wrappers and PEFT models keep their own,
    distributed wrappers delegate to ``.module``."""
    while not hasattr(model, "generate") and hasattr(model, "module"):
        model = model.module
    if not hasattr(model, "generate"):
        raise ValueError(f"`model` ({type(model).__name__}) has no `generate` method; pass a causal LM.")
    return model


@contextmanager
def perturb_prelogits(model: nn.Module, perturbations: Tensor) -> Iterator[None]:
    """Adds ``perturbations[:, t]`` to the pre-logit of the last position at the t-th call of the output layer.

    The hook exists only inside the ``with`` block and is removed in ``finally``, also when generation
    raises. Calls past the horizon ``tau`` leave the hidden state untouched.

    Each call of the output layer counts as one generated step. When the first call sees one position (``generate``
    keeps only the last position's logits), a later call that sees several positions (assisted or prompt-lookup
    decoding verifying drafted tokens), or a later forward fed several new tokens but computing one position's
    logits (a chunked prefill, ``prefill_chunk_size``), raises a `ValueError`: the noise would land on the wrong
    steps. A no-cache ``generate`` (``use_cache=False``, the whole sequence fed at every step) and repeated plain
    forwards over a whole sequence keep working. A chunked prefill whose later chunks each hold a single token looks
    exactly like decoding and cannot be detected here; the samplers refuse ``prefill_chunk_size`` up front.

    Args:
        model (`torch.nn.Module`): a causal LM, possibly wrapped (see `find_output_layer`).
        perturbations (`torch.Tensor` of shape `(B, tau, d)`): ``v_t`` for each of the ``B`` rows of the
            batch about to be generated; cast to the output layer's device and dtype once, on entry.

    Example:
        ```python
        >>> with perturb_prelogits(model, torch.zeros(4, 16, model.config.hidden_size)):
        ...     out = model.generate(input_ids, attention_mask=mask, do_sample=False, max_new_tokens=16)
        ```
    """
    head = find_output_layer(model)
    if perturbations.ndim != 3:
        raise ValueError(f"`perturbations` must have shape (B, tau, d), got {tuple(perturbations.shape)}.")
    weight = next(head.parameters(), None)
    if weight is not None:
        perturbations = perturbations.to(device=weight.device, dtype=weight.dtype)
    horizon = perturbations.shape[1]
    step = 0  # calls of the output layer so far: one per generated token
    first_width: int | None = None  # positions the output layer saw at the first call (1 inside generate)
    fed: int | None = None  # new token positions of the forward now running (from the input embeddings)
    first_fed: int | None = None

    def count_inputs(module: nn.Module, args: tuple[Tensor, ...]) -> None:
        nonlocal fed
        ids = args[0] if args else None  # input_ids (B, T_new)
        fed = ids.shape[-1] if isinstance(ids, Tensor) and ids.ndim >= 1 else None

    def add_noise(module: nn.Module, args: tuple[Tensor, ...]) -> tuple[Tensor, ...] | None:
        nonlocal step, first_width, fed, first_fed
        t, step = step, step + 1
        hidden = args[0]  # (B, T, d); T == 1 inside generate
        width, new, fed = hidden.shape[1], fed, None
        if t == 0:
            first_width, first_fed = width, new
        elif first_width == 1 and width > 1:
            raise ValueError(
                f"the output layer saw {width} positions in one call at generated step {t + 1} (shape "
                f"{tuple(hidden.shape)}) after one position per call before: assisted or prompt-lookup decoding "
                "(`assistant_model`, `prompt_lookup_num_tokens`, `assistant_early_exit`) verifies several tokens per "
                "call, so the pre-logit noise would land on the wrong steps; remove those generation settings."
            )
        elif first_width == 1 and new is not None and first_fed is not None and 1 < new != first_fed + t:
            # several new tokens, one position's logits, and not the whole sequence again (use_cache=False)
            raise ValueError(
                f"the model was fed {new} new tokens at output-layer call {t + 1} (after {first_fed} at the first "
                "call) and kept the logits of one position: a chunked prefill (`prefill_chunk_size`) runs the "
                "output layer once per prompt chunk, so the pre-logit noise would land on the wrong steps; remove "
                "`prefill_chunk_size` from the generation kwargs and the model's generation config."
            )
        if t >= horizon:
            return None
        if hidden.shape[0] != perturbations.shape[0] or hidden.shape[-1] != perturbations.shape[-1]:
            raise ValueError(
                f"the output layer received hidden states of shape {tuple(hidden.shape)} but the "
                f"perturbations have shape {tuple(perturbations.shape)}; batch size and width must match "
                "(beam search and num_return_sequences > 1 are not supported)."
            )
        v_t = perturbations[:, t : t + 1]  # (B, 1, d)
        if hidden.shape[1] == 1:
            return (hidden + v_t, *args[1:])
        # plain forward over a whole sequence: only the last position is the step being generated
        return (torch.cat([hidden[:, :-1], hidden[:, -1:] + v_t], dim=1), *args[1:])

    handles = [head.register_forward_pre_hook(add_noise)]
    embeddings = _input_embeddings(model)
    try:
        if embeddings is not None:
            handles.append(embeddings.register_forward_pre_hook(count_inputs))
        yield
    finally:
        for handle in handles:
            handle.remove()


PrelogitTransform = Callable[[Tensor, int], Tensor]
"""``(z_t, t) -> z_t'``: maps the pre-logits `(B, d)` of generated step ``t`` (0-based) to what the LM head sees."""


@contextmanager
def transform_prelogits(model: nn.Module, transform: PrelogitTransform, horizon: int | None = None) -> Iterator[None]:
    """Replaces the last position's pre-logit ``z_t`` by ``transform(z_t, t)`` at the t-th call of the output layer.

    The state-dependent counterpart of `perturb_prelogits`: the change is computed from ``z_t`` itself while decoding
    (RE-Control's gradient ascent on a value function, a learned controller adding ``u_t = f(z_t)``), instead of
    being drawn beforehand. The transform runs with gradients enabled (``generate`` runs under ``no_grad``) so that
    it may differentiate through a value model; its result is detached. The hook exists only inside the ``with``
    block and is removed in ``finally``, also when generation raises. As in `perturb_prelogits`, each call of the
    output layer counts as one generated step, and a call seeing several positions after one-position calls
    (assisted decoding) raises.

    Args:
        model (`torch.nn.Module`): a causal LM, possibly wrapped (see `find_output_layer`).
        transform (`Callable[[torch.Tensor, int], torch.Tensor]`): ``(z, t) -> z'``, both of shape `(B, d)`.
        horizon (`int`, *optional*): transform steps ``t < horizon`` only; later calls leave ``z_t`` untouched.

    Example:
        ```python
        >>> with transform_prelogits(model, lambda z, t: z + 0.1 * z.sign()):
        ...     out = model.generate(input_ids, attention_mask=mask, do_sample=False, max_new_tokens=16)
        ```
    """
    head = find_output_layer(model)
    if not callable(transform):
        raise TypeError(f"`transform` must be a callable (z, t) -> z', got {type(transform).__name__}.")
    step = 0
    first_width: int | None = None

    def apply(module: nn.Module, args: tuple[Tensor, ...]) -> tuple[Tensor, ...] | None:
        nonlocal step, first_width
        t, step = step, step + 1
        hidden = args[0]  # (B, T, d); T == 1 inside generate
        if t == 0:
            first_width = hidden.shape[1]
        elif first_width == 1 and hidden.shape[1] > 1:
            raise ValueError(
                f"the output layer saw {hidden.shape[1]} positions in one call at generated step {t + 1} after one "
                "position per call before: assisted or prompt-lookup decoding verifies several tokens per call, so "
                "the pre-logit transform would land on the wrong steps; remove those generation settings."
            )
        if horizon is not None and t >= horizon:
            return None
        last = hidden[:, -1]  # (B, d): the step being generated
        with torch.enable_grad():
            new = transform(last.detach(), t)
        if not isinstance(new, Tensor) or new.shape != last.shape:
            raise ValueError(
                f"`transform` must return a tensor of the input's shape {tuple(last.shape)}, got "
                f"{tuple(new.shape) if isinstance(new, Tensor) else type(new).__name__}."
            )
        new = new.detach().to(hidden.dtype)[:, None]  # (B, 1, d)
        if hidden.shape[1] == 1:
            return (new, *args[1:])
        return (torch.cat([hidden[:, :-1], new], dim=1), *args[1:])

    handle = head.register_forward_pre_hook(apply)
    try:
        yield
    finally:
        handle.remove()


def _input_embeddings(model: nn.Module) -> nn.Module | None:
    """The input embedding module (sees the ``(B, T_new)`` token ids of every forward), or None if not found."""
    get_embeddings = getattr(unwrap_model(model), "get_input_embeddings", None)
    try:
        embeddings = get_embeddings() if callable(get_embeddings) else None
    except (NotImplementedError, AttributeError):
        return None
    return embeddings if isinstance(embeddings, nn.Module) else None


@contextmanager
def capture_prelogits(model: nn.Module) -> Iterator[list[Tensor]]:
    """Records the input of the output layer at every call (``(B, T, d)`` each) into the yielded list.

    Used by the metrics (KL from the base model, token flip rate), which need ``z_t`` for a fixed sequence.
    The hook is removed in ``finally``.
    """
    head = find_output_layer(model)
    captured: list[Tensor] = []

    def record(module: nn.Module, args: tuple[Tensor, ...]) -> None:
        captured.append(args[0].detach())

    handle = head.register_forward_pre_hook(record)
    try:
        yield captured
    finally:
        handle.remove()


@contextmanager
def record_prelogits(model: nn.Module) -> Iterator[list[Tensor]]:
    """Records, at every call of the output layer, the last position's pre-logit `(B, d)` *before* any other
    pre-hook changes it (it runs first, so under `perturb_prelogits` it sees the unperturbed ``z_t``).

    Inside ``generate`` the t-th entry is ``z_t``, the pre-logit that produced generated token t (``generate``
    feeds one position per call): the base model's distribution there is ``softmax(head(z_t))``. The hook is
    removed in ``finally``.
    """
    head = find_output_layer(model)
    recorded: list[Tensor] = []

    def record(module: nn.Module, args: tuple[Tensor, ...]) -> None:
        recorded.append(args[0][:, -1].detach())

    handle = head.register_forward_pre_hook(record, prepend=True)
    try:
        yield recorded
    finally:
        handle.remove()
