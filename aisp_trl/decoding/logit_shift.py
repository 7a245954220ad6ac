"""What AISP's vLLM logits processor does, without vLLM: the request encoding, ``W``, and the logit shift.

With logits ``= scale * (W z + b)`` (no soft-capping), adding ``v_t`` to the pre-logit ``z_t`` adds
``scale * W v_t`` to the logits. `LogitShift` keeps, per row of the engine's persistent batch, which noise the row
uses and its live output-token list (its step), and adds ``scale * v_t W^T`` to the logits of the perturbed rows.
`aisp_trl.decoding.vllm_processor.PrelogitPerturbation` is the thin vLLM adapter around it; everything here imports
no vLLM, so its tests run without vLLM.

Per-request settings travel in ``SamplingParams.extra_args[EXTRA_KEY]`` (plain msgpack types: ints, floats, bytes),
built by `encode_draw` / `encode_steps`:

- ``{"draw": {...}, "sample": i}``: sample ``i`` of a `NoiseDraw` (generator state, mean, sigma2, n, horizon,
  proposal spec): the noise is redrawn in the worker, once per prompt and iteration however many rows share it, so
  both backends see the same numbers for a seed and the mean ``U`` is sent instead of ``n * tau * d`` floats (a zero
  mean, AISP's first iteration and BoN (N), is not sent at all);
- ``{"steps": {...}}``: the row's own `(tau, d)` perturbations, for callers that hand the decoder a dense tensor.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..proposals import make_proposal
from .noise import NoiseDraw

__all__ = [
    "EXTRA_KEY",
    "LogitShift",
    "check_logit_shift",
    "decode_draw",
    "encode_draw",
    "encode_steps",
    "load_output_weight",
    "logit_scale",
    "output_weight_names",
]

EXTRA_KEY = "aisp_prelogit"
"""The ``SamplingParams.extra_args`` key the processor reads."""


# -- what travels in extra_args ---------------------------------------------------------------------------------
def _pack(tensor: Tensor) -> dict[str, Any]:
    array = tensor.detach().cpu().contiguous().numpy()
    return {"dtype": array.dtype.str, "shape": list(array.shape), "data": array.tobytes()}


def _unpack(packed: dict[str, Any]) -> Tensor:
    array = np.frombuffer(packed["data"], dtype=np.dtype(packed["dtype"])).reshape(packed["shape"])
    return torch.from_numpy(array.copy())


def encode_draw(draw: NoiseDraw, sample: int) -> dict[str, Any]:
    """``extra_args[EXTRA_KEY]`` for sample ``sample`` of ``draw``; a zero mean is not sent."""
    return {
        "draw": {
            "state": _pack(draw.state),
            "mean": None if not draw.mean.any() else _pack(draw.mean),
            "mean_shape": list(draw.mean.shape),
            "mean_dtype": str(draw.mean.dtype).removeprefix("torch."),
            "sigma2": float(draw.sigma2),
            "n": int(draw.n),
            "horizon": int(draw.horizon),
            "proposal": draw.proposal.spec(),
        },
        "sample": int(sample),
    }


def decode_draw(packed: dict[str, Any]) -> NoiseDraw:
    """The `NoiseDraw` that `encode_draw` packed."""
    mean = (
        _unpack(packed["mean"])
        if packed["mean"] is not None
        else torch.zeros(packed["mean_shape"], dtype=getattr(torch, packed["mean_dtype"]))
    )
    return NoiseDraw(
        _unpack(packed["state"]),
        mean,
        packed["sigma2"],
        packed["n"],
        packed["horizon"],
        make_proposal(**packed["proposal"]),
    )


def encode_steps(steps: Tensor) -> dict[str, Any]:
    """``extra_args[EXTRA_KEY]`` for one row's own perturbations ``steps`` of shape `(tau, d)`."""
    if steps.ndim != 2:
        raise ValueError(f"`steps` must have shape (tau, d), got {tuple(steps.shape)}.")
    return {"steps": _pack(steps)}


# -- the model's output layer -------------------------------------------------------------------------------------
def logit_scale(hf_config: Any) -> float:
    """The factor ``s`` in logits ``= s * (W z + b)`` as vLLM computes them for this config (``logit_scale``,
    Cohere-style, divided by ``logits_scaling``, Granite-style; 1 otherwise).

    Raises:
        ValueError: for a soft-capped model (``final_logit_softcapping``, e.g. Gemma 2): its logits are
            ``c * tanh(...)``, not linear in the pre-logit, so ``W v_t`` added afterwards is not ``z_t + v_t``.
    """
    config = getattr(hf_config, "get_text_config", lambda: hf_config)()
    for name in ("final_logit_softcapping", "logit_softcapping"):
        cap = getattr(config, name, None)
        if cap is not None:
            raise ValueError(
                f"the model soft-caps its logits (`{name}={cap!r}` in its config): logits = cap * tanh(.), so a "
                "pre-logit perturbation cannot be added to them; run AISP on this model with the HF backend (pass "
                "the transformers model instead of a vllm.LLM)."
            )
    scale = getattr(config, "logit_scale", None)
    scaling = getattr(config, "logits_scaling", None)
    return float(scale if scale is not None else 1.0) / float(scaling if scaling is not None else 1.0)


def _checkpoint_dir(model: str, revision: str | None) -> Path:
    path = Path(model).expanduser()
    if path.is_dir():
        return path
    from huggingface_hub import snapshot_download  # the engine loaded it: it is in the Hugging Face cache

    return Path(snapshot_download(model, revision=revision, allow_patterns=["*.safetensors", "*.json"]))


def output_weight_names(hf_config: Any) -> list[str]:
    """Checkpoint names under which ``W`` may be stored, most likely first: the output layer's weight, then (tied
    embeddings) the input embedding's."""
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(hf_config)
    names = {id(p): n for n, p in model.named_parameters(remove_duplicate=False)}
    out = [n for n, p in model.named_parameters(remove_duplicate=False) if p is model.get_output_embeddings().weight]
    found = list(dict.fromkeys(out))
    if getattr(hf_config, "tie_word_embeddings", False) or not found:
        found.append(names[id(model.get_input_embeddings().weight)])
    return list(dict.fromkeys(found))


def load_output_weight(model: str, hf_config: Any, revision: str | None = None) -> Tensor:
    """``W`` of shape `(vocab, d)` read from the checkpoint's safetensors files (float32 is not forced).

    Raises:
        FileNotFoundError: if no safetensors file holds the output layer's weight.
    """
    from safetensors import safe_open

    folder = _checkpoint_dir(model, revision)
    names = output_weight_names(hf_config)
    files = sorted(folder.glob("*.safetensors"))
    index = folder / "model.safetensors.index.json"
    keys_in: dict[str, Path] = {}
    if index.is_file():
        keys_in = {k: folder / f for k, f in json.loads(index.read_text())["weight_map"].items()}
    else:
        for file in files:
            with safe_open(str(file), framework="pt") as handle:
                keys_in.update(dict.fromkeys(handle.keys(), file))
    for name in names:
        for key, file in keys_in.items():
            if key == name or key.endswith("." + name) or name.endswith("." + key):
                with safe_open(str(file), framework="pt") as handle:
                    return handle.get_tensor(key)
    raise FileNotFoundError(
        f"no safetensors file in {str(folder)!r} holds the output layer's weight (looked for {names}); AISP on vLLM "
        "reads W from safetensors checkpoints: save the model with `save_pretrained(folder)` and load that folder."
    )


def check_logit_shift(
    delta: Tensor,
    perturbation: Tensor,
    weight: Tensor,
    scale: float,
    model: str,
    *,
    rtol: float = 0.02,
    max_residual: float = 0.25,
) -> float:
    """Checks that an engine's logits moved by ``scale * W v`` when ``v`` was added to the pre-logit.

    ``scale`` is what `logit_scale` read from the config, hence what the processor adds; ``delta`` is what the engine
    computed (`aisp_trl.decoding.vllm_worker.LogitShiftProbe`). The measured factor is the least-squares ``s`` in
    ``delta ~ s * W v``; the residual of that fit, relative to ``delta``, says whether the shift is proportional to
    ``W v`` at all (a soft cap, a head that is not ``W``, or a ``W`` read under the wrong name break it; rounding in
    bf16 or a quantized head stay far below ``max_residual``).

    Args:
        delta (`torch.Tensor`): the engine's logits with ``v`` minus without, `(rows, vocab)`.
        perturbation (`torch.Tensor`): ``v``, `(rows, d)`.
        weight (`torch.Tensor`): ``W`` as the processor reads it (`load_output_weight`), `(vocab', d)`; compared on
            the first ``min(vocab, vocab')`` tokens (vLLM cuts its padded vocabulary).
        scale (`float`): the factor the processor multiplies ``W v`` by.
        model (`str`): names the model in the error (its path or id and architecture).
        rtol (`float`, defaults to 0.02): the largest relative difference between the measured and the read factor.
        max_residual (`float`, defaults to 0.25): the largest relative residual of the fit.

    Returns:
        `float`: the measured factor.

    Raises:
        ValueError: if the shift is not proportional to ``W v``, or its factor is not ``scale``; the message names
            the model and says what to do.
    """
    vocab = min(delta.shape[-1], weight.shape[0])
    measured = delta[..., :vocab].double()
    # W v in float32, 8k tokens at a time (W is (vocab, d): 1 GB in bf16 for a 128k x 4096 head), sums in float64
    v = perturbation.float()
    expected = torch.cat([v @ chunk.float().T for chunk in weight[:vocab].split(8192)], dim=-1).double()  # (rows, V)
    norm = float(expected.pow(2).sum())
    factor = float((measured * expected).sum()) / norm if norm > 0 else float("nan")
    size = float(measured.norm())
    residual = float((measured - factor * expected).norm()) / size if size > 0 else float("inf")
    skip = "`load_llm(..., verify_logit_shift=False)` skips this check, and vLLM's samples then differ from the HF's"
    if not residual <= max_residual:
        raise ValueError(
            f"{model}: its logits do not move by a multiple of W v when the pre-logit moves by v (relative residual "
            f"{residual:.3g} > {max_residual}), so aisp_trl's processor cannot stand in for the pre-logit hook: its "
            f"head is not linear in the pre-logit, or the W read from the checkpoint is not the one the engine uses. "
            f"Run AISP on this model with the HF backend (pass the transformers model instead of a vllm.LLM); {skip}."
        )
    if not abs(factor - scale) <= rtol * abs(scale):
        raise ValueError(
            f"{model}: its head multiplies the logits by {factor:.4g}, but aisp_trl reads {scale:.4g} from its config "
            f"(`logit_scale` / `logits_scaling`), so the processor's logit shifts would be {scale / factor:.3g}x "
            "what the pre-logit perturbation gives (the HF hook's). Run AISP on this model with the HF backend (pass "
            f"the transformers model instead of a vllm.LLM) and report the config key that holds the factor; {skip}."
        )
    return factor


# -- the shift -----------------------------------------------------------------------------------------------------
class LogitShift:
    """Adds ``scale * W v_t`` to the logits of each batch row whose request carries ``extra_args[EXTRA_KEY]``.

    The step ``t`` of a row is the length of its live output-token list, so a prefill split in chunks or a request
    preempted and resumed still perturbs generated step ``t`` with ``v_t``; steps past the horizon are left alone.
    Rows without the key cost nothing.

    Args:
        weight (`Callable[[], torch.Tensor]`): returns ``W`` of shape `(vocab, d)`; called on the first perturbed
            request (a model served without AISP never reads it).
        scale (`float`): ``s`` in logits ``= s * (W z + b)`` (see `logit_scale`).
        device (`torch.device`): where the logits live.
        dtype (`torch.dtype`): the dtype of ``W`` and ``v_t`` (the model's, as the HF hook adds ``v_t``).
    """

    def __init__(self, weight: Callable[[], Tensor], scale: float, device: torch.device, dtype: torch.dtype):
        self._load_weight, self.scale, self.device, self.dtype = weight, scale, torch.device(device), dtype
        self._weight: Tensor | None = None
        self.rows: dict[int, tuple[str, int, Sequence[int]]] = {}  # batch index -> (noise key, sample, output ids)
        self.noise: dict[str, Tensor] = {}  # noise key -> (n, tau, d) per-step perturbations, on device
        self.users: dict[str, int] = {}  # noise key -> rows that use it
        self._own_rows = 0  # dense per-row perturbations get their own key each

    @property
    def weight(self) -> Tensor:
        if self._weight is None:
            self._weight = self._load_weight().to(device=self.device, dtype=self.dtype)
        return self._weight

    def update(
        self,
        removed: Sequence[int],
        added: Sequence[tuple[int, dict[str, Any] | None, Sequence[int]]],
        moved: Sequence[tuple[int, int, bool]],
    ) -> None:
        """Applies one change of the persistent batch, in vLLM's order: removed, added, moved.

        Args:
            removed (`list[int]`): batch indices freed.
            added (`list[tuple]`): ``(index, extra_args or None, live output-token list)`` per new request.
            moved (`list[tuple]`): ``(a, b, swap)``: a swap of ``a`` and ``b``, or (``swap`` false) ``a`` moved to
                ``b``, replacing what was there.
        """
        for index in removed:
            self._drop(index)
        for index, extra_args, output_ids in added:
            self._drop(index)  # an added request may replace one at the same index
            spec = (extra_args or {}).get(EXTRA_KEY)
            if spec is not None:
                self.rows[index] = (*self._noise_for(spec), output_ids)
        for a, b, swap in moved:
            row_a, row_b = self.rows.pop(a, None), self.rows.pop(b, None)
            if swap:
                if row_b is not None:
                    self.rows[a] = row_b
            elif row_b is not None:  # one-way a -> b replaces b
                self._release(row_b[0])
            if row_a is not None:
                self.rows[b] = row_a

    def apply(self, logits: Tensor) -> Tensor:
        """``logits`` `(batch, vocab)` += ``scale * v_t W^T`` on the perturbed rows still within their horizon
        (in place; returned)."""
        if not self.rows:
            return logits
        indices, vectors = [], []
        for index, (key, sample, output_ids) in self.rows.items():
            steps = self.noise[key]  # (n, tau, d)
            t = len(output_ids)  # tokens generated so far: this forward picks token t + 1, perturbed by v_{t+1}
            if index < logits.shape[0] and t < steps.shape[1]:
                indices.append(index)
                vectors.append(steps[sample, t])
        if indices:
            weight = self.weight[: logits.shape[1]]  # vLLM may pad the vocabulary; its logits are cut to it
            shift = torch.stack(vectors) @ weight.T  # (k, d) @ (d, vocab) -> (k, vocab)
            rows = torch.tensor(indices, device=logits.device)
            logits.index_add_(0, rows, (self.scale * shift).to(logits.dtype))
        return logits

    def _noise_for(self, spec: dict[str, Any]) -> tuple[str, int]:
        """The noise key and sample index of a request; draws the noise once per key."""
        if "draw" in spec:
            draw = decode_draw(spec["draw"])
            key, sample = draw.key(), int(spec["sample"])
            if key not in self.noise:
                self.noise[key] = draw.steps().to(device=self.device, dtype=self.dtype)
        else:
            self._own_rows += 1
            key, sample = f"steps:{self._own_rows}", 0
            self.noise[key] = _unpack(spec["steps"]).unsqueeze(0).to(device=self.device, dtype=self.dtype)
        self.users[key] = self.users.get(key, 0) + 1
        return key, sample

    def _drop(self, index: int) -> None:
        row = self.rows.pop(index, None)
        if row is not None:
            self._release(row[0])

    def _release(self, key: str) -> None:
        self.users[key] -= 1
        if not self.users[key]:
            del self.users[key], self.noise[key]
