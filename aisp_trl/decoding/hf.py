"""`HFDecoder`: the `Decoder` on transformers' ``generate``, perturbing pre-logits through the LM-head hook."""

from __future__ import annotations

import contextlib
import copy
from typing import Any

import torch
from torch import Tensor, nn
from transformers import GenerationConfig

from .._compat import cache_kwarg, last_logits_kwargs, output_cache
from ..hooks import (
    PrelogitTransform,
    find_output_layer,
    generation_model,
    perturb_prelogits,
    record_prelogits,
    transform_prelogits,
    unwrap_model,
)
from ..lm_head import token_logprobs
from .base import cut_completion, eos_ids
from .noise import PrelogitNoise


class HFDecoder:
    """Decodes left-padded rows with ``generate``; pre-logit perturbations go through `perturb_prelogits`.

    Rows that start from the same query share its prefill: the distinct queries run once (all but their last token)
    and each row gets a copy of its query's key-value cache, so ``generate`` only runs the last query token and the
    new ones (same samples, less compute; the measured speed-up is in the README).

    Args:
        model (`torch.nn.Module`): a causal LM, possibly wrapped (PEFT, DDP, value head; see `aisp_trl.hooks`).
        pad_token_id (`int`): the id that left-pads the rows (hidden by the attention mask).
        max_batch_rows (`int`, *optional*): decode at most this many rows per ``generate`` call (memory); greedy
            results do not change, sampled ones stay reproducible per seed.
    """

    def __init__(self, model: nn.Module, pad_token_id: int, max_batch_rows: int | None = None):
        if max_batch_rows is not None and (
            isinstance(max_batch_rows, bool) or not isinstance(max_batch_rows, int) or max_batch_rows < 1
        ):
            raise ValueError(
                f"`max_batch_rows` must be an integer >= 1 or None (all rows at once), got {max_batch_rows!r}."
            )
        self.model, self.pad_token_id, self.max_batch_rows = model, pad_token_id, max_batch_rows
        self.generator_model = generation_model(model)
        self.output_layer = find_output_layer(model)

    @property
    def device(self) -> torch.device:
        return self.output_layer.weight.device

    # -- the Decoder protocol ---------------------------------------------------------------------------------
    def greedy(
        self,
        rows: list[list[int]],
        horizons: list[int],
        config: GenerationConfig,
        perturbations: Tensor | PrelogitNoise | None = None,
        *,
        transform: PrelogitTransform | None = None,
        device: torch.device | None = None,
        **model_kwargs: Any,
    ) -> list[list[int]]:
        """Greedy decoding of ``rows`` (``config`` must be greedy, ``max_new_tokens >= max(horizons)``); with
        ``perturbations`` of shape `(len(rows), tau, d)` (or a `PrelogitNoise`, drawn here), ``v_t`` is added to the
        pre-logit at generated step t; with ``transform`` (``(z_t, t) -> z_t'`` on `(rows, d)`, see
        `transform_prelogits`), the LM head sees its output. The input ids go to ``device`` (default: the LM head's)."""
        if perturbations is not None and transform is not None:
            raise ValueError("pass either `perturbations` or `transform` to `greedy`, not both.")
        return self._decode(rows, horizons, config, perturbations, None, model_kwargs, transform, device)[0]

    def greedy_with_nll(
        self,
        rows: list[list[int]],
        horizons: list[int],
        config: GenerationConfig,
        perturbations: Tensor | PrelogitNoise | None = None,
        *,
        device: torch.device | None = None,
        **model_kwargs: Any,
    ) -> tuple[list[list[int]], list[float]]:
        """`greedy`, and per row ``-log P_base(completion | row)`` under the unperturbed model, from the pre-logits
        ``z_t`` the decode computed anyway (recorded before the noise is added): one float32 head pass over the
        generated positions after decoding, no second forward through the model."""
        completions, nll = self._decode(rows, horizons, config, perturbations, None, model_kwargs, None, device, True)
        return completions, nll  # type: ignore[return-value]

    def sample(
        self,
        rows: list[list[int]],
        horizons: list[int],
        config: GenerationConfig,
        seed: int,
        *,
        device: torch.device | None = None,
        **model_kwargs: Any,
    ) -> list[list[int]]:
        """Sampled decoding under ``torch.random.fork_rng`` seeded with ``seed`` (the global RNG is restored)."""
        return self._decode(rows, horizons, config, None, seed, model_kwargs, device=device)[0]

    def sample_with_nll(
        self,
        rows: list[list[int]],
        horizons: list[int],
        config: GenerationConfig,
        seed: int,
        *,
        device: torch.device | None = None,
        **model_kwargs: Any,
    ) -> tuple[list[list[int]], list[float]]:
        """`sample`, and per row ``-log P_base(completion | row)`` under the model at temperature 1 with no
        truncation (the base distribution, not the sampling one), from the pre-logits the decode computed."""
        completions, nll = self._decode(rows, horizons, config, None, seed, model_kwargs, None, device, True)
        return completions, nll  # type: ignore[return-value]

    @torch.no_grad()
    def response_nll(self, rows: list[list[int]], completions: list[list[int]], chunk_rows: int = 32) -> list[float]:
        """Per row, ``-sum_t log P_base(c_t | row, c_<t)`` under the unperturbed model, teacher-forced (0.0 for an
        empty completion). As in `greedy`, each distinct query's prefill runs once and its key-value cache is copied
        to its rows, so the forward covers the completions only (positions counted from the first real token, as
        ``generate`` does); logits in float32, completion positions only.

        Args:
            rows (`list[list[int]]`): the queries, one per completion.
            completions (`list[list[int]]`): the decoded completions (EOS kept, as the decoders return them).
            chunk_rows (`int`, defaults to 32): rows per forward (``max_batch_rows`` when smaller): memory.

        Returns:
            `list[float]`: one value per row, in nats.
        """
        inner = unwrap_model(self.model)
        step = min(chunk_rows, self.max_batch_rows or chunk_rows)
        values: list[float] = []
        for lo in range(0, len(rows), step):
            chunk, outs = rows[lo : lo + step], completions[lo : lo + step]
            lengths = [len(c) for c in outs]
            if max(lengths) == 0:
                values += [0.0] * len(chunk)
                continue
            picked = self._completion_logprobs(inner, chunk, outs)  # (B, T_max), completion tokens left-aligned
            values += [float(-picked[b, :n].sum()) if n else 0.0 for b, n in enumerate(lengths)]
        return values

    def _completion_logprobs(self, inner: nn.Module, rows: list[list[int]], completions: list[list[int]]) -> Tensor:
        """``log P(c_t | row, c_<t)`` `(B, T_max)` (zero past each completion's end): the queries' prefill once, then
        ``[last query token] + completion`` per row on a copy of its query's cache."""
        distinct = list(dict.fromkeys(tuple(r) for r in rows))
        owner = {query: j for j, query in enumerate(distinct)}
        query_ids, query_mask = self.left_pad([list(q) for q in distinct])  # (b, W)
        cache = self._prompt_cache(query_ids, query_mask)
        owners = [owner[tuple(r)] for r in rows]
        width, t_max = max(len(c) for c in completions), query_ids.shape[1]
        # the new part of each row: its query's last token, then the completion, right-padded (masked, causal)
        new = torch.full((len(rows), 1 + width), self.pad_token_id, dtype=torch.long, device=self.device)
        new_mask = torch.zeros_like(new)
        for i, (q, c) in enumerate(zip(rows, completions, strict=True)):
            new[i, 0], new_mask[i, 0] = q[-1], 1
            new[i, 1 : 1 + len(c)] = torch.tensor(c, dtype=torch.long)
            new_mask[i, 1 : 1 + len(c)] = 1
        index = torch.tensor(owners, device=self.device)
        mask = torch.cat([query_mask[index, :-1], new_mask], dim=1)  # (B, W - 1 + 1 + width)
        positions = (mask.cumsum(dim=-1) - 1).clamp(min=0)
        if cache is not None:
            kwargs = {**self._rows_cache(cache, owners), "use_cache": True}
            output = inner(input_ids=new, attention_mask=mask, position_ids=positions[:, t_max - 1 :], **kwargs)
        else:  # no copyable cache: the whole rows
            full = torch.cat([query_ids[index, :-1], new], dim=1)
            output = inner(input_ids=full, attention_mask=mask, position_ids=positions, use_cache=False)
        logits = output.logits[:, -(1 + width) : -1].float()  # (B, width, V): position t predicts completion token t
        logp = torch.log_softmax(logits, dim=-1).gather(-1, new[:, 1:, None])[..., 0]  # (B, width)
        return logp * new_mask[:, 1:]

    # -- internals --------------------------------------------------------------------------------------------
    def _decode(
        self,
        rows: list[list[int]],
        horizons: list[int],
        config: GenerationConfig,
        perturbations: Tensor | PrelogitNoise | None,
        seed: int | None,
        model_kwargs: dict[str, Any],
        transform: PrelogitTransform | None = None,
        device: torch.device | None = None,
        with_nll: bool = False,
    ) -> tuple[list[list[int]], list[float] | None]:
        """``(completions, base NLL per row or None)``; the NLL from the pre-logits recorded while decoding."""
        if isinstance(perturbations, PrelogitNoise):
            perturbations = perturbations.dense()  # (rows, tau, d)
        input_ids, attention_mask = self.left_pad(rows, device)
        distinct = list(dict.fromkeys(tuple(r) for r in rows))
        owner = {query: j for j, query in enumerate(distinct)}
        first_rows = [rows.index(list(query)) for query in distinct]
        prompt_cache = self._prompt_cache(input_ids[first_rows], attention_mask[first_rows])
        eos = eos_ids(config)
        step = self.max_batch_rows or len(rows)
        devices = [self.device] if self.device.type == "cuda" else []
        completions: list[list[int]] = []
        nll: list[float] = []
        with torch.random.fork_rng(devices=devices, enabled=seed is not None):
            if seed is not None:
                torch.manual_seed(seed)  # one stream across the slices
            for lo in range(0, len(rows), step):
                hi = min(lo + step, len(rows))
                kwargs = self._rows_cache(prompt_cache, [owner[tuple(rows[i])] for i in range(lo, hi)])
                recording = record_prelogits(self.model) if with_nll else contextlib.nullcontext([])
                with (
                    torch.no_grad(),
                    recording as steps,
                    _maybe_perturb(self.model, perturbations, lo, hi, transform, max(horizons)),
                ):
                    output = self.generator_model.generate(
                        input_ids=input_ids[lo:hi],
                        attention_mask=attention_mask[lo:hi],
                        generation_config=config,
                        **kwargs,
                        **model_kwargs,
                    )
                cut = _cut(output, input_ids.shape[1], horizons[lo:hi], eos)
                completions += cut
                if with_nll:
                    nll += self._recorded_nll(steps, cut)
        return completions, (nll if with_nll else None)

    def _recorded_nll(self, steps: list[Tensor], completions: list[list[int]]) -> list[float]:
        """``-sum_t log P_base(c_t)`` per row from ``steps[t]`` `(B, d)`, the unperturbed pre-logit that produced
        token t: only the positions inside each completion go through the head."""
        longest = max((len(c) for c in completions), default=0)
        if longest == 0:
            return [0.0] * len(completions)
        if len(steps) < longest:
            raise RuntimeError(
                f"recorded {len(steps)} calls of the output layer for completions of up to {longest} tokens; this "
                "model does not call its LM head once per generated token, so the base NLL cannot be read off the "
                "decode."
            )
        z = torch.stack(steps[:longest], dim=1)  # (B, T, d)
        row_index = [b for b, c in enumerate(completions) for _ in c]
        step_index = [t for c in completions for t in range(len(c))]
        tokens = torch.tensor([token for c in completions for token in c], dtype=torch.long, device=z.device)
        logp = token_logprobs(self.model, z[row_index, step_index], tokens)  # (P,)
        totals = torch.zeros(len(completions), dtype=torch.float64, device=z.device)
        totals.index_add_(0, torch.tensor(row_index, device=z.device), logp.double())
        return (-totals).tolist()

    def left_pad(self, rows: list[list[int]], device: torch.device | None = None) -> tuple[Tensor, Tensor]:
        """Left-pads token rows into `(B, L)` input ids and attention mask on ``device`` (default: the LM head's)."""
        width = max(len(r) for r in rows)
        ids = torch.full((len(rows), width), self.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, row in enumerate(rows):
            ids[i, width - len(row) :] = torch.tensor(row)
            mask[i, width - len(row) :] = 1
        device = device if device is not None else self.device
        return ids.to(device), mask.to(device)

    def _prompt_cache(self, ids: Tensor, mask: Tensor) -> Any | None:
        """The key-value cache of left-padded queries `(b, L)` without their last token, or ``None`` where the model
        returns no cache that can be copied per row (then every row runs its own prefill)."""
        if ids.shape[1] < 2:
            return None
        # positions as generate counts them on a left-padded batch (the first real token is 0): with plain arange
        # positions a padded row's cache would sit `pad` positions off the tokens generate appends
        positions = (mask.cumsum(dim=-1) - 1).clamp(min=0)
        inner = unwrap_model(self.model)
        try:
            with torch.no_grad():
                # only the cache is used: logits of the last position only, not (b, L - 1, V) (0.7 GB a prompt in
                # bf16 at 2,600 tokens and a 128k vocabulary); the cache, hence the samples, are the same
                output = inner(
                    input_ids=ids[:, :-1],
                    attention_mask=mask[:, :-1],
                    position_ids=positions[:, :-1],
                    use_cache=True,
                    **last_logits_kwargs(inner),
                )
        except (TypeError, ValueError, NotImplementedError):
            return None
        cache = output_cache(output) if hasattr(output, "get") else None
        layers = getattr(cache, "layers", None)
        if not layers or not all(hasattr(layer, "batch_select_indices") for layer in layers):
            return None
        return cache

    def _rows_cache(self, cache: Any | None, owners: list[int]) -> dict[str, Any]:
        """``generate`` keyword arguments giving each row a copy of its query's cache (``owners[i]``: the query of
        row ``i``); empty without a cache."""
        if cache is None:
            return {}
        rows = copy.deepcopy(cache)
        index = torch.tensor(owners, device=self.device)
        for layer in rows.layers:
            layer.batch_select_indices(index)
        return {cache_kwarg(unwrap_model(self.model)): rows}


def _maybe_perturb(
    model: nn.Module,
    perturbations: Tensor | None,
    lo: int,
    hi: int,
    transform: PrelogitTransform | None = None,
    horizon: int | None = None,
) -> Any:
    if transform is not None:
        return transform_prelogits(model, transform, horizon)
    return contextlib.nullcontext() if perturbations is None else perturb_prelogits(model, perturbations[lo:hi])


def _cut(output: Tensor, prompt_width: int, horizons: list[int], eos: set[int]) -> list[list[int]]:
    """Cuts each generated row at its own horizon and after its first EOS token (kept)."""
    return [cut_completion(row, tau, eos) for row, tau in zip(output[:, prompt_width:].tolist(), horizons, strict=True)]
