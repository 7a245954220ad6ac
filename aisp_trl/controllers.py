"""Small trained modules on the pre-logit: RE-Control's value function and an amortized AISP controller.

Both act on ``z_t``, the hidden state entering the LM head, while one greedy decode runs (`transform_prelogits`).
This module holds the modules, their fitting and their safetensors I/O; the samplers that decode with them are
`aisp_trl.samplers.REControlSampler` (which also collects RE-Control's training data) and
`aisp_trl.samplers.AmortizedSampler`.

- RE-Control (Kong et al., NeurIPS 2024): a value MLP ``V(z)`` trained on the pre-logits of base-model responses to
  predict their final reward (`train_value_model`, the authors' objective); at test time ``n_steps``
  gradient-ascent steps of size ``step_size`` on ``z_t`` before the LM head (`gradient_ascent`).
- Amortized AISP: a controller MLP ``u_t = f(z_t)`` fitted on AISP's per-prompt results (the perturbation ``V``
  that decoded the best response, or the final mean ``U``, paired with the pre-logits of the trajectory it decoded;
  `controller_pairs`, `fit_controller`). Its last layer starts at zero, so an untrained controller decodes exactly
  greedy.

Both modules save and load with safetensors (`save_module`, `load_module`), their sizes and training record in
the file's metadata.
"""

from __future__ import annotations

import copy
import json
import math
import os
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from transformers import GenerationConfig

from ._validation import check_int, check_positive
from .hooks import capture_prelogits, find_output_layer, generation_model, unwrap_model

__all__ = [
    "ControllerConfig",
    "PrelogitController",
    "REControlConfig",
    "ValueMLP",
    "controller_pairs",
    "fit_controller",
    "gradient_ascent",
    "load_module",
    "prelogits_along",
    "save_module",
    "train_value_model",
    "value_loss",
]

VALUE_OBJECTIVES = ("bellman", "monte_carlo")
CONTROLLER_TARGETS = ("best", "mean")


# ------------------------------------------------------------------------------------------------- configs


@dataclass
class REControlConfig:
    """RE-Control (Kong et al., 2024): collecting value data, training the value MLP, and its test-time ascent.

    The defaults follow the authors' code (three-layer MLP ``d -> d -> d -> 1``, Adam, sampling with temperature
    0.7, top-k 50, top-p 0.95; 30 ascent steps of size 1.0 at test time), scaled to a small model and budget.
    """

    samples_per_prompt: int = field(default=8, metadata={"help": "Base-model responses sampled per training prompt."})
    max_new_tokens: int = field(default=32, metadata={"help": "New tokens per sampled response."})
    temperature: float = field(default=0.7, metadata={"help": "Sampling temperature of the collected responses."})
    top_p: float = field(default=0.95, metadata={"help": "Nucleus mass of the collected responses."})
    top_k: int = field(default=50, metadata={"help": "Top-k of the collected responses (0: off)."})
    hidden_size: int | None = field(
        default=None, metadata={"help": "Width of the value MLP's hidden layers; None: the model's width d."}
    )
    num_layers: int = field(default=3, metadata={"help": "Linear layers of the value MLP (the paper: 3)."})
    objective: str = field(
        default="bellman",
        metadata={
            "help": "'bellman' (the authors' code: V(z_T) = r at the last step, V(z_t) = V(z_{t+1}) between steps) "
            "or 'monte_carlo' (V(z_t) = r at every step)."
        },
    )
    learning_rate: float = field(default=1e-3, metadata={"help": "Adam learning rate of the value MLP."})
    epochs: int = field(default=50, metadata={"help": "Passes over the collected trajectories."})
    batch_size: int = field(default=64, metadata={"help": "Trajectories per optimiser step."})
    n_steps: int = field(default=30, metadata={"help": "Test time: gradient-ascent steps on z_t per token."})
    step_size: float = field(default=1.0, metadata={"help": "Test time: size of each ascent step."})
    seed: int = field(default=0, metadata={"help": "Seed of the sampling, the initialisation and the batches."})

    def __post_init__(self) -> None:
        for name, low in (("samples_per_prompt", 1), ("max_new_tokens", 1), ("num_layers", 2), ("epochs", 1)):
            check_int(name, getattr(self, name), low)
        check_int("batch_size", self.batch_size, 1)
        check_int("n_steps", self.n_steps, 0)
        check_int("top_k", self.top_k, 0)
        if self.hidden_size is not None:
            check_int("hidden_size", self.hidden_size, 1)
        check_positive("temperature", self.temperature)
        check_positive("learning_rate", self.learning_rate)
        check_positive("step_size", self.step_size, allow_zero=True)
        if not (isinstance(self.top_p, int | float) and 0.0 < self.top_p <= 1.0):
            raise ValueError(f"`top_p` must lie in (0, 1], got {self.top_p!r}; 1.0 samples from the full softmax.")
        if self.objective not in VALUE_OBJECTIVES:
            raise ValueError(f"`objective` must be one of {VALUE_OBJECTIVES}, got {self.objective!r}.")
        check_int("seed", self.seed, 0)


@dataclass
class ControllerConfig:
    """The amortized AISP controller ``u_t = f(z_t)`` and its fit on AISP's per-prompt targets."""

    target: str = field(
        default="best",
        metadata={
            "help": "'best': the perturbation V that decoded each prompt's best response, paired with the pre-logits "
            "of that response; 'mean': the final mean U, paired with the pre-logits of the response U decodes."
        },
    )
    hidden_size: int = field(default=256, metadata={"help": "Width of the controller's hidden layer."})
    learning_rate: float = field(default=1e-3, metadata={"help": "Adam learning rate."})
    weight_decay: float = field(default=1e-4, metadata={"help": "AdamW weight decay."})
    epochs: int = field(default=200, metadata={"help": "Passes over the (z_t, u_t) pairs."})
    batch_size: int = field(default=256, metadata={"help": "Pairs per optimiser step."})
    validation_fraction: float = field(
        default=0.125,
        metadata={"help": "Prompts held out of the fit to pick the epoch (early stopping); 0 keeps the last epoch."},
    )
    seed: int = field(default=0, metadata={"help": "Seed of the initialisation, the split and the batches."})

    def __post_init__(self) -> None:
        if self.target not in CONTROLLER_TARGETS:
            raise ValueError(f"`target` must be one of {CONTROLLER_TARGETS}, got {self.target!r}.")
        for name in ("hidden_size", "epochs", "batch_size"):
            check_int(name, getattr(self, name), 1)
        check_int("seed", self.seed, 0)
        check_positive("learning_rate", self.learning_rate)
        check_positive("weight_decay", self.weight_decay, allow_zero=True)
        if not (isinstance(self.validation_fraction, int | float) and 0.0 <= self.validation_fraction < 1.0):
            raise ValueError(
                f"`validation_fraction` must lie in [0, 1), got {self.validation_fraction!r}; 0 disables it."
            )


# ------------------------------------------------------------------------------------------------- modules


class _Standardize(nn.Module):
    """``(z - mean) / scale`` with buffers fitted to the training pre-logits (saved with the module)."""

    def __init__(self, width: int):
        super().__init__()
        self.register_buffer("mean", torch.zeros(width))
        self.register_buffer("scale", torch.ones(width))

    def fit(self, z: Tensor) -> None:
        """Sets the buffers from pre-logits `(N, d)`."""
        self.mean.copy_(z.mean(dim=0))
        self.scale.copy_(z.std(dim=0).clamp(min=1e-6) if len(z) > 1 else torch.ones_like(self.scale))

    def forward(self, z: Tensor) -> Tensor:
        return (z - self.mean) / self.scale


class ValueMLP(nn.Module):
    """RE-Control's value function ``V(z)``: an MLP with ReLU on the (standardised) pre-logit.

    Args:
        input_dim (`int`): d, the model's pre-logit width.
        hidden_size (`int`, *optional*): width of the hidden layers; defaults to ``input_dim`` (the authors' code).
        num_layers (`int`, defaults to 3): linear layers (>= 2).

    Shapes: ``forward(z)`` maps `(..., d)` to `(...,)`.
    """

    kind = "value"

    def __init__(self, input_dim: int, hidden_size: int | None = None, num_layers: int = 3):
        super().__init__()
        check_int("input_dim", input_dim, 1)
        check_int("num_layers", num_layers, 2)
        hidden = hidden_size or input_dim
        check_int("hidden_size", hidden, 1)
        self.input_dim, self.hidden_size, self.num_layers = input_dim, hidden, num_layers
        self.norm = _Standardize(input_dim)
        widths = [input_dim] + [hidden] * (num_layers - 1) + [1]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(widths[:-1], widths[1:], strict=True))

    def forward(self, z: Tensor) -> Tensor:
        x = self.norm(z.to(self.norm.mean.dtype))
        for layer in self.layers[:-1]:
            x = F.relu(layer(x))
        return self.layers[-1](x).squeeze(-1)

    def config(self) -> dict[str, Any]:
        return {"input_dim": self.input_dim, "hidden_size": self.hidden_size, "num_layers": self.num_layers}


class PrelogitController(nn.Module):
    """The amortized AISP controller ``u = f(z)``: ``Linear(d, h) -> GELU -> Linear(h, d)`` on the standardised
    pre-logit. The output layer starts at zero, so a fresh controller adds nothing (decodes exactly greedy).

    Args:
        input_dim (`int`): d, the model's pre-logit width.
        hidden_size (`int`, defaults to 256): h.

    Shapes: ``forward(z)`` maps `(..., d)` to `(..., d)`.
    """

    kind = "controller"

    def __init__(self, input_dim: int, hidden_size: int = 256):
        super().__init__()
        check_int("input_dim", input_dim, 1)
        check_int("hidden_size", hidden_size, 1)
        self.input_dim, self.hidden_size = input_dim, hidden_size
        self.norm = _Standardize(input_dim)
        self.hidden = nn.Linear(input_dim, hidden_size)
        self.output = nn.Linear(hidden_size, input_dim)
        nn.init.zeros_(self.output.weight)
        nn.init.zeros_(self.output.bias)

    def forward(self, z: Tensor) -> Tensor:
        return self.output(F.gelu(self.hidden(self.norm(z.to(self.norm.mean.dtype)))))

    def config(self) -> dict[str, Any]:
        return {"input_dim": self.input_dim, "hidden_size": self.hidden_size}


_KINDS: dict[str, type[nn.Module]] = {"value": ValueMLP, "controller": PrelogitController}


def save_module(module: ValueMLP | PrelogitController, path: str | os.PathLike, info: dict | None = None) -> Path:
    """Saves a value MLP or controller to a safetensors file; sizes and ``info`` (e.g. the training record) go into
    the file's metadata (JSON strings)."""
    from safetensors.torch import save_file

    if not isinstance(module, ValueMLP | PrelogitController):
        raise TypeError(f"`module` must be a ValueMLP or a PrelogitController, got {type(module).__name__}.")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().float().cpu().contiguous() for k, v in module.state_dict().items()}
    metadata = {"kind": module.kind, "config": json.dumps(module.config()), "info": json.dumps(info or {}, default=str)}
    save_file(tensors, str(path), metadata=metadata)
    return path


def load_module(path: str | os.PathLike, kind: str | None = None) -> tuple[nn.Module, dict[str, Any]]:
    """Loads what `save_module` wrote; returns the module (eval mode, CPU, float32) and its ``info``.

    Args:
        path (`str` or `os.PathLike`): the safetensors file.
        kind (`str`, *optional*): ``"value"`` or ``"controller"``; a file of the other kind raises.
    """
    from safetensors import safe_open
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"no safetensors file at {str(path)!r}; train one first (recipes/re_control.py for a value model, "
            "recipes/amortize_aisp.py for a controller)."
        )
    with safe_open(str(path), framework="pt") as f:
        metadata = f.metadata() or {}
    found = metadata.get("kind")
    if found not in _KINDS:
        raise ValueError(f"{str(path)!r} is not a file written by `save_module` (metadata kind {found!r}).")
    if kind is not None and found != kind:
        raise ValueError(f"{str(path)!r} holds a {found!r} module, not a {kind!r} one; pass the right file.")
    module = _KINDS[found](**json.loads(metadata["config"]))
    module.load_state_dict(load_file(str(path)))
    return module.eval(), json.loads(metadata.get("info", "{}"))


# -------------------------------------------------------------------------------------------- pre-logits


@torch.no_grad()
def prelogits_along(model: nn.Module, query: Sequence[int], completion: Sequence[int]) -> Tensor:
    """The unperturbed pre-logits ``z_1..z_T`` along a fixed response, from one forward through the capture hook.

    Args:
        model (`torch.nn.Module`): the causal LM (possibly wrapped).
        query (`Sequence[int]`): the prompt ids, `(L_q,)`.
        completion (`Sequence[int]`): the response ids, `(T,)`, T >= 1.

    Returns:
        `torch.Tensor` of shape `(T, d)`, float32 on CPU: ``z_t`` is the head input that predicts response token t.
    """
    query, completion = [int(t) for t in query], [int(t) for t in completion]
    if not query or not completion:
        raise ValueError(
            f"`query` and `completion` need at least one token each, got {len(query)} and {len(completion)}."
        )
    device = find_output_layer(model).weight.device
    ids = torch.tensor([query + completion], dtype=torch.long, device=device)  # (1, L_q + T)
    with capture_prelogits(model) as captured:
        unwrap_model(model)(input_ids=ids, attention_mask=torch.ones_like(ids), use_cache=False)
    if len(captured) != 1 or captured[0].shape[1] != ids.shape[1]:
        raise RuntimeError(
            f"expected one call of the output layer over {ids.shape[1]} positions, got "
            f"{[tuple(c.shape) for c in captured]}; this model computes its logits in an unsupported way."
        )
    n = len(query)
    return captured[0][0, n - 1 : n - 1 + len(completion)].float().cpu()  # (T, d)


# ------------------------------------------------------------------------------------------------ RE-Control


def value_loss(values: Tensor, mask: Tensor, rewards: Tensor, objective: str = "bellman") -> Tensor:
    """RE-Control's value objective on a batch of trajectories.

    ``"bellman"`` (the authors' code): ``sum (V(z_t) - V(z_{t+1}))^2`` over consecutive valid steps plus
    ``sum (V(z_T) - r)^2`` at each last step, divided by the batch size. ``"monte_carlo"``: ``(V(z_t) - r)^2``
    averaged over the valid steps.

    Args:
        values (`torch.Tensor` of shape `(B, T)`): ``V(z_t)``.
        mask (`torch.Tensor` of shape `(B, T)`): 1 on valid steps (a prefix of each row).
        rewards (`torch.Tensor` of shape `(B,)`): the final rewards.
        objective (`str`): ``"bellman"`` or ``"monte_carlo"``.

    Returns:
        `torch.Tensor`: the scalar loss.
    """
    if objective not in VALUE_OBJECTIVES:
        raise ValueError(f"`objective` must be one of {VALUE_OBJECTIVES}, got {objective!r}.")
    mask = mask.to(values.dtype)
    if objective == "monte_carlo":
        return ((values - rewards[:, None]) ** 2 * mask).sum() / mask.sum().clamp(min=1)
    pairs = mask[:, :-1] * mask[:, 1:]  # both steps valid
    consistency = ((values[:, :-1] - values[:, 1:]) ** 2 * pairs).sum()
    last = (mask.sum(dim=1).long() - 1).clamp(min=0)  # index of each row's last valid step
    final = ((values.gather(1, last[:, None]).squeeze(1) - rewards) ** 2).sum()
    return (consistency + final) / len(values)


def train_value_model(data: dict[str, Tensor], config: REControlConfig) -> tuple[ValueMLP, dict[str, Any]]:
    """Fits `ValueMLP` on `collect_value_data`'s output with `value_loss` and Adam.

    Returns:
        `tuple` of the trained model (eval mode) and a record: ``losses`` (mean loss per epoch), ``train_seconds``.
    """
    states, mask, rewards = data["states"], data["mask"], data["rewards"]
    if states.ndim != 3 or mask.shape != states.shape[:2] or rewards.shape != states.shape[:1]:
        raise ValueError(
            f"value data must hold states (M, T, d), mask (M, T) and rewards (M,), got {tuple(states.shape)}, "
            f"{tuple(mask.shape)} and {tuple(rewards.shape)}."
        )
    generator = torch.Generator().manual_seed(config.seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        value = ValueMLP(states.shape[-1], config.hidden_size, config.num_layers)
    value.norm.fit(states[mask.bool()])
    optimizer = torch.optim.Adam(value.parameters(), lr=config.learning_rate)
    losses, start = [], time.perf_counter()
    value.train()
    for _ in range(config.epochs):
        order, total = torch.randperm(len(states), generator=generator), 0.0
        for lo in range(0, len(order), config.batch_size):
            batch = order[lo : lo + config.batch_size]
            loss = value_loss(value(states[batch]), mask[batch], rewards[batch], config.objective)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += float(loss.detach()) * len(batch)
        losses.append(total / len(states))
    value.eval()
    return value, {"losses": losses, "train_seconds": time.perf_counter() - start}


def gradient_ascent(value: nn.Module, z: Tensor, n_steps: int, step_size: float) -> Tensor:
    """``n_steps`` steps ``z <- z + step_size * grad V(z)`` (RE-Control's SGD on ``-V``), each row on its own.

    Args:
        value (`torch.nn.Module`): ``V``, mapping `(B, d)` to `(B,)`.
        z (`torch.Tensor` of shape `(B, d)`): the pre-logits.
        n_steps (`int`): ascent steps (0 returns ``z``).
        step_size (`float`): the step size.

    Returns:
        `torch.Tensor` of shape `(B, d)`, detached, in ``z``'s dtype.
    """
    x = z.detach().float().clone()
    for _ in range(n_steps):
        x.requires_grad_(True)
        with torch.enable_grad():
            (grad,) = torch.autograd.grad(value(x).sum(), x)  # rows are independent: the sum's gradient is per row
        x = (x + step_size * grad).detach()
    return x.to(z.dtype)


# ---------------------------------------------------------------------------------------------- amortized


def controller_pairs(
    model: nn.Module,
    records: Sequence[dict[str, Any]],
    means: dict[int, dict[str, Tensor]],
    target: str = "best",
    pad_token_id: int | None = None,
) -> list[tuple[Tensor, Tensor]]:
    """``(z, u)`` training pairs per prompt from AISP records and their stored means (see
    `aisp_trl.pipeline.load_means`).

    - ``"best"``: ``u`` = the perturbation that decoded the best response, ``z`` = the unperturbed pre-logits along
      that response (decoding with ``z_t + u_t`` reproduces it).
    - ``"mean"``: ``u`` = the final mean ``U``, ``z`` = the pre-logits along the response ``U`` decodes (one greedy
      decode per prompt).

    Returns:
        `list` of ``(z, u)``, each `(T, d)` float32, one per record with a non-empty response.
    """
    if target not in CONTROLLER_TARGETS:
        raise ValueError(f"`target` must be one of {CONTROLLER_TARGETS}, got {target!r}.")
    pairs = []
    for record in records:
        stored = means.get(int(record["prompt_id"]))
        if stored is None:
            raise ValueError(
                f"no stored mean for prompt {record['prompt_id']}; rerun the generation with `save_means=True`."
            )
        query = record["query_ids"]
        if target == "best":
            completion, u = record["best"]["completion_ids"], stored["best"]
        else:
            from .decoding import HFDecoder

            u = stored["mean"]
            if u.shape[0] == 1:  # a steering-vector mean (1, d) acts at every step of the horizon
                u = u.expand(int(record["horizon"]), -1)
            config = copy.deepcopy(getattr(generation_model(model), "generation_config", None) or GenerationConfig())
            config.update(do_sample=False, num_beams=1, max_new_tokens=u.shape[0], temperature=None, top_p=None)
            config.update(top_k=None)
            pad = pad_token_id if pad_token_id is not None else config.pad_token_id
            completion = HFDecoder(model, pad).greedy([query], [u.shape[0]], config, u[None])[0]
        if completion:
            steps = min(len(completion), u.shape[0])
            pairs.append((prelogits_along(model, query, completion[:steps]), u[:steps].float()))
    return pairs


def fit_controller(pairs: Sequence[tuple[Tensor, Tensor]], config: ControllerConfig) -> tuple[PrelogitController, dict]:
    """Fits `PrelogitController` by mean squared error on ``(z, u)`` pairs (prompts split into fit / validation).

    Args:
        pairs (`Sequence[tuple[Tensor, Tensor]]`): per prompt ``z`` `(T, d)` and ``u`` `(T, d)`.
        config (`ControllerConfig`): sizes and optimisation.

    Returns:
        `tuple` of the controller (eval mode; the epoch with the lowest validation loss when a validation split is
        used) and a record: ``train_losses``, ``val_losses``, ``best_epoch``, ``val_r2`` (fraction of the targets'
        variance explained on the validation prompts), ``train_seconds``, sizes.
    """
    if not pairs:
        raise ValueError("`pairs` is empty; the AISP records gave no response to learn from.")
    generator = torch.Generator().manual_seed(config.seed)
    order = torch.randperm(len(pairs), generator=generator).tolist()
    n_val = int(round(config.validation_fraction * len(pairs)))
    n_val = min(n_val, len(pairs) - 1)
    val_ids, fit_ids = order[:n_val], order[n_val:]
    z_fit = torch.cat([pairs[i][0] for i in fit_ids])
    u_fit = torch.cat([pairs[i][1] for i in fit_ids])
    z_val = torch.cat([pairs[i][0] for i in val_ids]) if val_ids else None
    u_val = torch.cat([pairs[i][1] for i in val_ids]) if val_ids else None
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        controller = PrelogitController(z_fit.shape[-1], config.hidden_size)
    controller.norm.fit(z_fit)
    optimizer = torch.optim.AdamW(controller.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)
    train_losses, val_losses = [], []
    best_state, best_val, best_epoch = copy.deepcopy(controller.state_dict()), math.inf, 0
    start = time.perf_counter()
    for epoch in range(config.epochs):
        controller.train()
        perm, total = torch.randperm(len(z_fit), generator=generator), 0.0
        for lo in range(0, len(perm), config.batch_size):
            batch = perm[lo : lo + config.batch_size]
            loss = F.mse_loss(controller(z_fit[batch]), u_fit[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += float(loss.detach()) * len(batch)
        train_losses.append(total / len(z_fit))
        if z_val is not None:
            controller.eval()
            with torch.no_grad():
                val = float(F.mse_loss(controller(z_val), u_val))
            val_losses.append(val)
            if val < best_val:
                best_val, best_epoch, best_state = val, epoch + 1, copy.deepcopy(controller.state_dict())
    if z_val is not None:
        controller.load_state_dict(best_state)
    else:
        best_epoch = config.epochs
    controller.eval()
    val_r2 = math.nan
    if z_val is not None:
        with torch.no_grad():
            residual = float(((controller(z_val) - u_val) ** 2).sum())
        val_r2 = 1.0 - residual / float(((u_val - u_fit.mean(dim=0)) ** 2).sum())
    return controller, {
        "train_losses": train_losses,
        "val_losses": val_losses,
        "best_epoch": best_epoch,
        "val_r2": val_r2,
        "train_seconds": time.perf_counter() - start,
        "num_prompts": len(pairs),
        "num_pairs": int(sum(len(z) for z, _ in pairs)),
        "target_mean_square": float((u_fit**2).mean()),
        "config": asdict(config),
    }


def attach_prelogit_module(
    sampler: Any, module: nn.Module | str | os.PathLike, cls: type[nn.Module], kind: str, argument: str
) -> nn.Module:
    """``module`` (or the safetensors file it names) checked against the sampler's LM-head width, moved to the
    head's device, in eval mode: what `REControlSampler` and `AmortizedSampler` decode with."""
    if not isinstance(module, cls):
        if not isinstance(module, str | os.PathLike):
            raise TypeError(
                f"`{argument}` must be a {cls.__name__} or the path of its safetensors file, got "
                f"{type(module).__name__}; train one with recipes/re_control.py or recipes/amortize_aisp.py."
            )
        module = load_module(module, kind=kind)[0]
    width = sampler.output_layer.weight.shape[1]
    if module.input_dim != width:
        raise ValueError(
            f"`{argument}` reads pre-logits of width {module.input_dim}, but the model's LM head takes {width}; "
            "train it on this model's pre-logits."
        )
    return module.to(sampler.output_layer.weight.device).eval()
