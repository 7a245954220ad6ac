"""`VLLMDecoder`: the `Decoder` on a ``vllm.LLM`` engine, perturbing pre-logits through a v1 logits processor.

Greedy rows carry their noise recipe in ``SamplingParams.extra_args`` (`aisp_trl.decoding.vllm_processor`); sampled
rows (BoN top-p) use vLLM's own sampling: one request per distinct query with ``n`` samples and a ``seed``.
vLLM is imported on use, so the package works without it.
"""

from __future__ import annotations

import hashlib
from typing import Any

from torch import Tensor
from transformers import GenerationConfig

from .base import cut_completion, eos_ids
from .noise import PrelogitNoise

__all__ = [
    "PROBE_EXTENSION",
    "VLLM_INSTALL_HINT",
    "VLLMDecoder",
    "check_engine",
    "import_vllm",
    "is_vllm_engine",
    "verify_logit_shift",
]

VLLM_INSTALL_HINT = "bash scripts/setup.sh --vllm (or `pip install 'aisp-trl[vllm]'`)"

_PROCESSOR = "aisp_trl.decoding.vllm_processor.PrelogitPerturbation"

PROBE_EXTENSION = "aisp_trl.decoding.vllm_worker.LogitShiftProbe"
"""The ``worker_extension_cls`` that `aisp_trl.vllm.load_llm` gives its engines, for `verify_logit_shift`."""


def import_vllm() -> Any:
    """The ``vllm`` module, or an `ImportError` that says how to install it."""
    try:
        import vllm
    except ImportError as error:
        raise ImportError(
            f"vLLM is not installed here ({error}); install the optional extra with `{VLLM_INSTALL_HINT}`, or pass a "
            "transformers model to run on the HF backend."
        ) from error
    return vllm


def is_vllm_engine(model: Any) -> bool:
    """Whether ``model`` is a ``vllm.LLM`` (checked without importing vLLM)."""
    return any(cls.__module__.startswith("vllm.") and cls.__name__ == "LLM" for cls in type(model).__mro__)


def check_engine(llm: Any) -> None:
    """Refuses an engine that cannot perturb pre-logits: without `PrelogitPerturbation` registered, or soft-capped.

    Raises:
        ValueError: naming what is missing and how to build the engine (`aisp_trl.vllm.load_llm`).
    """
    from .logit_shift import logit_scale

    registered = getattr(llm.model_config, "logits_processors", None) or []
    names = {p if isinstance(p, str) else f"{p.__module__}.{p.__qualname__}" for p in registered}
    if not names & {_PROCESSOR, _PROCESSOR.replace(".PrelogitPerturbation", ":PrelogitPerturbation")}:
        raise ValueError(
            f"`model` is a vllm.LLM built without aisp_trl's logits processor (its logits_processors: "
            f"{sorted(names) or None}), so pre-logit noise cannot reach it; build it with "
            "`aisp_trl.vllm.load_llm(model_name_or_path, **engine_kwargs)`, or pass "
            "`logits_processors=[aisp_trl.vllm.PrelogitPerturbation]` to `vllm.LLM`."
        )
    logit_scale(llm.model_config.hf_config)  # raises for soft-capped logits


def verify_logit_shift(llm: Any, *, seed: int = 0, rows: int = 2, rtol: float = 0.02) -> float:
    """Measures the engine's logit shift for a pre-logit perturbation ``v`` and checks it is the processor's
    ``scale * W v`` (`aisp_trl.decoding.logit_shift.check_logit_shift`); `aisp_trl.vllm.load_llm` calls it.

    Why a measurement and not a list of architectures known to be plain: vLLM 0.32 runs some 300 architectures and
    the factors after the output layer come under per-family config keys (``logit_scale`` Cohere, ``logits_scaling``
    Granite, ``lm_head_multiplier`` Falcon-H1, ``output_mult / mup_scale_factor`` TeleFLM, ``output_multiplier``
    Muse Glimmer, ...), so a list goes stale with every vLLM release and says nothing about a model it does not
    name; the measurement checks what this engine computes, for any architecture, and also catches a ``W`` read
    under the wrong name. It costs two calls of the output layer on ``rows`` random hidden states (no decoding)
    and one read of ``W``.

    Args:
        llm (`vllm.LLM`): an engine built with ``worker_extension_cls=PROBE_EXTENSION`` (as `load_llm` builds it).
        seed (`int`, defaults to 0): seeds the probe's hidden states and ``v``.
        rows (`int`, defaults to 2): how many hidden states to probe.
        rtol (`float`, defaults to 0.02): the largest relative difference between the measured and the read factor.

    Returns:
        `float`: the measured factor (equal to `logit_scale` within ``rtol``).

    Raises:
        ValueError: if the shift is not ``logit_scale(config) * W v``, or the engine cannot be probed; the message
            names the model, its architecture and the way out.
    """
    from .logit_shift import _unpack, check_logit_shift, load_output_weight, logit_scale

    config = llm.model_config
    architectures = ", ".join(getattr(config.hf_config, "architectures", None) or []) or "unknown architecture"
    name = f"`model_name_or_path={str(config.model)!r}` ({architectures})"
    probes = [p for p in llm.collective_rpc("aisp_probe_logit_shift", args=(seed, rows)) if p is not None]
    errors = [p["error"] for p in probes if "error" in p]
    if errors or not probes:
        raise ValueError(
            f"{name}: aisp_trl cannot measure how this engine's logits move with the pre-logit "
            f"({errors[0] if errors else 'no worker returned logits'}); run AISP on this model with the HF backend "
            "(pass the transformers model instead of a vllm.LLM), or pass `verify_logit_shift=False` to `load_llm` "
            "to skip the check (vLLM's samples may then differ from the HF's)."
        )
    probe = probes[0]
    weight = load_output_weight(str(config.model), config.hf_config, config.revision)
    return check_logit_shift(
        _unpack(probe["delta"]),
        _unpack(probe["perturbation"]),
        weight,
        logit_scale(config.hf_config),
        f"{name}, run as vLLM's {probe['architecture']}",
        rtol=rtol,
    )


class VLLMDecoder:
    """Decodes token rows on a ``vllm.LLM`` built by `aisp_trl.vllm.load_llm`.

    Args:
        llm (`vllm.LLM`): the engine, with `PrelogitPerturbation` among its ``logits_processors``.
        max_batch_rows (`int`, *optional*): accepted for the samplers' signature; vLLM schedules rows itself
            (``max_num_seqs``), so it only caps how many requests one ``generate`` call submits.
    """

    def __init__(self, llm: Any, max_batch_rows: int | None = None):
        if max_batch_rows is not None and (
            isinstance(max_batch_rows, bool) or not isinstance(max_batch_rows, int) or max_batch_rows < 1
        ):
            raise ValueError(
                f"`max_batch_rows` must be an integer >= 1 or None (all rows at once), got {max_batch_rows!r}."
            )
        import_vllm()
        check_engine(llm)
        self.llm, self.max_batch_rows = llm, max_batch_rows

    # -- the Decoder protocol ---------------------------------------------------------------------------------
    def greedy(
        self,
        rows: list[list[int]],
        horizons: list[int],
        config: GenerationConfig,
        perturbations: Tensor | PrelogitNoise | None = None,
        *,
        transform: Any | None = None,
        device: Any | None = None,  # the engine places its inputs (the samplers refuse a device for it)
        **model_kwargs: Any,
    ) -> list[list[int]]:
        """Greedy decoding of ``rows``, row ``i`` for ``horizons[i]`` tokens; with ``perturbations`` (a
        `PrelogitNoise`, redrawn in the engine's worker, or a dense `(len(rows), tau, d)` tensor, sent row by row),
        ``W v_t`` is added to the logits at generated step t. A state-dependent ``transform`` is refused."""
        if transform is not None:
            raise TypeError(
                "a pre-logit `transform` (RE-Control, an amortized controller) needs the hidden state z_t, which the "
                "vLLM backend does not expose; pass a transformers model to these samplers."
            )
        return self._greedy(rows, horizons, config, perturbations, model_kwargs, with_nll=False)[0]

    def greedy_with_nll(
        self,
        rows: list[list[int]],
        horizons: list[int],
        config: GenerationConfig,
        perturbations: Tensor | PrelogitNoise | None = None,
        *,
        device: Any | None = None,
        **model_kwargs: Any,
    ) -> tuple[list[list[int]], list[float]]:
        """`greedy`, and per row ``-log P_base(completion | row)``: the engine returns each decoded token's
        log-probability in its ``raw_logprobs`` mode (vLLM's default), which vLLM computes from the model's logits
        before any logits processor, so before AISP's shift: the base model's."""
        completions, nll = self._greedy(rows, horizons, config, perturbations, model_kwargs, with_nll=True)
        return completions, nll  # type: ignore[return-value]

    def _greedy(
        self,
        rows: list[list[int]],
        horizons: list[int],
        config: GenerationConfig,
        perturbations: Tensor | PrelogitNoise | None,
        model_kwargs: dict[str, Any],
        with_nll: bool,
    ) -> tuple[list[list[int]], list[float] | None]:
        from .logit_shift import EXTRA_KEY, encode_draw, encode_steps

        _refuse_model_kwargs(model_kwargs)
        if isinstance(perturbations, PrelogitNoise):
            if perturbations.rows != len(rows):
                raise ValueError(f"`perturbations` describes {perturbations.rows} rows for {len(rows)} rows.")
            sources = perturbations.row_sources()
            extras = [{EXTRA_KEY: encode_draw(perturbations.draws[j], i)} for j, i in sources]
        elif perturbations is not None:
            if perturbations.ndim != 3 or perturbations.shape[0] != len(rows):
                raise ValueError(
                    f"`perturbations` must have shape ({len(rows)}, tau, d), got {tuple(perturbations.shape)}."
                )
            extras = [{EXTRA_KEY: encode_steps(perturbations[i, :tau])} for i, tau in enumerate(horizons)]
        else:
            extras = [None] * len(rows)
        logprobs = self._logprobs(with_nll)
        params = [
            self._params(config, tau, greedy=True, extra_args=extra, **logprobs)
            for tau, extra in zip(horizons, extras, strict=True)
        ]
        outputs = self._generate(rows, params)
        eos = eos_ids(config)
        completions = [
            cut_completion(list(out.outputs[0].token_ids), tau, eos) for out, tau in zip(outputs, horizons, strict=True)
        ]
        if not with_nll:
            return completions, None
        return completions, [_nll(out.outputs[0], c) for out, c in zip(outputs, completions, strict=True)]

    def sample(
        self,
        rows: list[list[int]],
        horizons: list[int],
        config: GenerationConfig,
        seed: int,
        *,
        device: Any | None = None,
        **model_kwargs: Any,
    ) -> list[list[int]]:
        """Sampled decoding with vLLM's sampler (``temperature``, ``top_p``, ``top_k``, ``min_p``,
        ``repetition_penalty``, ``min_new_tokens`` from ``config``; other settings are not carried over): rows with
        the same query and horizon form one request with ``n`` samples and a seed derived from ``seed`` and the
        query, so the result is reproducible per seed (vLLM's sampler, not transformers': the samples differ from
        the HF backend's)."""
        return self._sample(rows, horizons, config, seed, model_kwargs, with_nll=False)[0]

    def sample_with_nll(
        self,
        rows: list[list[int]],
        horizons: list[int],
        config: GenerationConfig,
        seed: int,
        *,
        device: Any | None = None,
        **model_kwargs: Any,
    ) -> tuple[list[list[int]], list[float]]:
        """`sample`, and each row's ``-log P_base(completion | row)`` from the engine's raw log-probabilities
        (before temperature, top-p and any logits processor: the base model at T = 1, untruncated)."""
        completions, nll = self._sample(rows, horizons, config, seed, model_kwargs, with_nll=True)
        return completions, nll  # type: ignore[return-value]

    def _sample(
        self,
        rows: list[list[int]],
        horizons: list[int],
        config: GenerationConfig,
        seed: int,
        model_kwargs: dict[str, Any],
        with_nll: bool,
    ) -> tuple[list[list[int]], list[float] | None]:
        _refuse_model_kwargs(model_kwargs)
        logprobs = self._logprobs(with_nll)
        groups: dict[tuple[tuple[int, ...], int], list[int]] = {}
        for i, (row, tau) in enumerate(zip(rows, horizons, strict=True)):
            groups.setdefault((tuple(row), tau), []).append(i)
        prompts, params = [], []
        for (row, tau), members in groups.items():
            digest = hashlib.sha256(f"{seed}:{tau}:{','.join(map(str, row))}".encode()).digest()
            request_seed = int.from_bytes(digest[:8], "little") >> 1
            prompts.append(list(row))
            params.append(self._params(config, tau, greedy=False, n=len(members), seed=request_seed, **logprobs))
        outputs = self._generate(prompts, params)
        eos = eos_ids(config)
        completions: list[list[int]] = [[] for _ in rows]
        nll: list[float] = [0.0] * len(rows)
        for ((_, tau), members), output in zip(groups.items(), outputs, strict=True):
            for i, sample in zip(members, output.outputs, strict=True):
                completions[i] = cut_completion(list(sample.token_ids), tau, eos)
                nll[i] = _nll(sample, completions[i]) if with_nll else 0.0
        return completions, (nll if with_nll else None)

    def _logprobs(self, with_nll: bool) -> dict[str, Any]:
        """``SamplingParams`` keywords that return each decoded token's base log-probability (``logprobs=0``: the
        chosen token only), after checking the engine reports raw log-probabilities."""
        if not with_nll:
            return {}
        mode = str(getattr(self.llm.model_config, "logprobs_mode", "raw_logprobs"))
        if mode.rsplit(".", 1)[-1].lower() != "raw_logprobs":
            raise ValueError(
                "`kl_coef > 0` on vLLM reads the base model's log-probabilities of the decoded tokens, but this engine "
                f"reports `logprobs_mode={mode!r}` (after temperature, top-p or AISP's logit shift); build it with "
                "`logprobs_mode='raw_logprobs'` (vLLM's default)."
            )
        return {"logprobs": 0}

    # -- internals --------------------------------------------------------------------------------------------
    def _params(self, config: GenerationConfig, tau: int, greedy: bool, **kwargs: Any) -> Any:
        vllm = import_vllm()
        for name in _UNSUPPORTED:
            value = getattr(config, name, None)
            if value not in (None, 0, [], ()):
                raise ValueError(
                    f"`{name}={value!r}` is a transformers generation setting that the vLLM backend does not apply; "
                    f"remove it (e.g. `{name}=None` in the generation config), or pass a transformers "
                    "model to decode with `generate`."
                )
        eos = sorted(eos_ids(config))
        settings: dict[str, Any] = {"temperature": 0.0}
        if not greedy:
            settings = {
                "temperature": 1.0 if config.temperature is None else float(config.temperature),
                "top_p": 1.0 if config.top_p is None else float(config.top_p),
                "top_k": 0 if not config.top_k else int(config.top_k),
                "min_p": 0.0 if config.min_p is None else float(config.min_p),
            }
        if config.repetition_penalty not in (None, 1.0):  # HF applies it to greedy decoding as well
            settings["repetition_penalty"] = float(config.repetition_penalty)
        if config.min_new_tokens:
            settings["min_tokens"] = min(int(config.min_new_tokens), tau)
        return vllm.SamplingParams(
            max_tokens=tau,
            stop_token_ids=eos,
            detokenize=False,
            skip_special_tokens=False,
            **settings,
            **kwargs,
        )

    def _generate(self, prompts: list[list[int]], params: list[Any]) -> list[Any]:
        step = self.max_batch_rows or len(prompts)
        outputs: list[Any] = []
        for lo in range(0, len(prompts), step):
            batch = [{"prompt_token_ids": p} for p in prompts[lo : lo + step]]
            outputs += self.llm.generate(batch, params[lo : lo + step], use_tqdm=False)
        return outputs


# transformers logits processors that would change the decoded tokens but have no vLLM counterpart here
_UNSUPPORTED = (
    "no_repeat_ngram_size",
    "bad_words_ids",
    "suppress_tokens",
    "begin_suppress_tokens",
    "sequence_bias",
    "forced_bos_token_id",
    "forced_eos_token_id",
    "exponential_decay_length_penalty",
)


def _nll(sample: Any, completion: list[int]) -> float:
    """``-sum_t log P_base(c_t)`` from a vLLM completion's per-token log-probabilities (``logprobs=0`` keeps the
    chosen token's), over the completion as cut."""
    steps = sample.logprobs or []
    if len(steps) < len(completion):
        raise RuntimeError(
            f"vLLM returned log-probabilities for {len(steps)} of {len(completion)} decoded tokens; the base NLL needs "
            "one per token (`SamplingParams(logprobs=0)`)."
        )
    return -sum(float(step[token].logprob) for step, token in zip(steps, completion, strict=False))


def _refuse_model_kwargs(model_kwargs: dict[str, Any]) -> None:
    if model_kwargs:
        raise ValueError(
            f"the vLLM backend takes no model keyword arguments, got {sorted(model_kwargs)}; put generation settings "
            "in `generation_config`, or pass a transformers model to use them with `generate`."
        )
