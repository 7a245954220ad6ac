"""What a generation run leaves on disk, and the checks that let it resume: JSONL record shards (one per process),
the stored AISP means (safetensors), ``aisp_run.json`` (settings, model, dtype, reward) and the resume check.

A shard is appended one prompt batch at a time and fsynced; a run killed mid-line leaves a cut last line, which
`_repair_shard` cuts off before the next append. ``records.jsonl`` is the merged copy written at the end.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..config import AISPConfig
from ..decoding.vllm import is_vllm_engine
from ..rewards import RewardFunction, SequenceClassifierReward

__all__ = ["MEANS_PREFIX", "RECORDS_FILE", "RUN_FILE", "SHARD_DIR", "load_means", "load_records", "means_path",
           "run_identity", "shard_path"]  # fmt: skip

logger = logging.getLogger(__name__)

SHARD_DIR = "shards"
RECORDS_FILE = "records.jsonl"
MEANS_PREFIX = "means"
RUN_FILE = "aisp_run.json"


def shard_path(output_dir: str | os.PathLike, rank: int) -> Path:
    """``output_dir/shards/records-{rank:05d}.jsonl``."""
    return Path(output_dir) / SHARD_DIR / f"records-{rank:05d}.jsonl"


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Reads records, skipping a truncated last line (a run killed while writing)."""
    records = []
    lines = path.read_text().split("\n")
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            if i < len(lines) - 1:  # only the last line may be cut short
                raise ValueError(f"{path}: line {i + 1} is not valid JSON; delete the file to regenerate it.") from None
    return records


def _repair_shard(path: Path, chunk_size: int = 1 << 16) -> None:
    """Cuts a shard after its last complete line, in place, so that appends start on a fresh line.

    Only the cut tail is removed (``truncate`` then ``fsync``); the complete lines are never rewritten, so a kill
    during the repair cannot lose them.
    """
    if not path.is_file():
        return
    with path.open("r+b") as f:
        end = f.seek(0, os.SEEK_END)
        if end == 0:
            return
        f.seek(end - 1)
        if f.read(1) == b"\n":
            return
        keep, position = 0, end
        while position > 0:  # scan backwards for the last newline, one chunk at a time
            start = max(0, position - chunk_size)
            f.seek(start)
            newline = f.read(position - start).rfind(b"\n")
            if newline >= 0:
                keep = start + newline + 1
                break
            position = start
        logger.warning("%s: dropping a cut last line (%d bytes) left by an interrupted run.", path, end - keep)
        f.truncate(keep)
        f.flush()
        os.fsync(f.fileno())


def means_path(output_dir: str | os.PathLike, rank: int) -> Path:
    """``output_dir/shards/means-{rank:05d}.safetensors``: the stored means of one process's prompts."""
    return Path(output_dir) / SHARD_DIR / f"{MEANS_PREFIX}-{rank:05d}.safetensors"


def _append_means(path: Path, new: Mapping[str, torch.Tensor]) -> None:
    """Adds tensors to a safetensors file: the old ones and the new ones go to a temporary file that replaces it in
    one ``os.replace``, so a killed run leaves either the old file or the new one, never a cut one."""
    from safetensors.torch import load_file, save_file

    tensors = load_file(str(path)) if path.is_file() else {}
    tensors.update({k: v.detach().float().cpu().contiguous() for k, v in new.items()})
    tmp = path.with_name(path.name + ".tmp")
    save_file(tensors, str(tmp))
    with tmp.open("rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)


def load_means(output_dir: str | os.PathLike) -> dict[int, dict[str, torch.Tensor]]:
    """The means stored by ``run_generation(..., save_means=True)``: prompt id -> ``{"mean": U, "best": V}``, each of
    shape `(tau, d)` (per step, as `SearchResult.final_mean`), float32 on CPU."""
    from safetensors.torch import load_file

    means: dict[int, dict[str, torch.Tensor]] = {}
    for path in sorted((Path(output_dir) / SHARD_DIR).glob(f"{MEANS_PREFIX}-*.safetensors")):
        for key, tensor in load_file(str(path)).items():
            prompt_id, name = key.split(".", 1)
            means.setdefault(int(prompt_id), {})[name] = tensor
    return means


def load_records(output_dir: str | os.PathLike) -> list[dict[str, Any]]:
    """All records in ``output_dir``'s shards, one per prompt id, sorted by prompt id."""
    by_id: dict[int, dict[str, Any]] = {}
    for path in sorted((Path(output_dir) / SHARD_DIR).glob("records-*.jsonl")):
        for record in _read_jsonl(path):
            by_id.setdefault(int(record["prompt_id"]), record)
    return [by_id[i] for i in sorted(by_id)]


def _run_settings(
    aisp_config: AISPConfig,
    max_new_tokens: int,
    framing: str,
    max_prompt_length: int | None,
    identity: Mapping[str, str] | None = None,
) -> dict:
    return {
        "aisp": aisp_config.settings(),
        "max_new_tokens": max_new_tokens,
        "framing": framing,
        "max_prompt_length": max_prompt_length,
        **(identity or {}),
    }


def _name_or_path(name: str) -> str:
    """A model or reward name as recorded: an existing folder as its absolute path, anything else as given."""
    return str(Path(name).resolve()) if name and Path(name).is_dir() else name


def run_identity(
    model: nn.Module, reward: RewardFunction, model_name: str | None = None, reward_name: str | None = None
) -> dict[str, str]:
    """What a resumed run must share with the interrupted one besides the settings: model, dtype and reward.

    Args:
        model (`nn.Module`): the causal LM; its name defaults to ``config._name_or_path`` (else its class name).
        reward (`RewardFunction`): the reward; its name defaults to the reward model's ``_name_or_path`` for a
            `SequenceClassifierReward`, else ``reward.name``.
        model_name (`str`, *optional*): the name or path the model was loaded from.
        reward_name (`str`, *optional*): the reward as given (``"vader"``, a reward-model path, ...).

    Returns:
        `dict`: ``{"model", "dtype", "reward"}``, recorded in ``aisp_run.json``.
    """
    if is_vllm_engine(model):  # the same checkpoint and dtype on vLLM gives the same samples: it resumes an HF run
        model_name = model_name or str(model.model_config.model)
        dtype = str(model.model_config.dtype).removeprefix("torch.")
    else:
        config = getattr(model, "config", None) or getattr(getattr(model, "pretrained_model", None), "config", None)
        if model_name is None:
            model_name = getattr(config, "_name_or_path", "") or type(model).__name__
        parameter = next(model.parameters(), None)
        dtype = str(parameter.dtype).removeprefix("torch.") if parameter is not None else "unknown"
    if reward_name is None:
        reward_model = getattr(reward, "model", None) if isinstance(reward, SequenceClassifierReward) else None
        reward_name = getattr(getattr(reward_model, "config", None), "_name_or_path", "") or reward.name
    return {"model": _name_or_path(model_name), "dtype": dtype, "reward": _name_or_path(reward_name)}


_RESUME_FIXES = {"model": "model_name_or_path", "dtype": "dtype", "reward": "reward"}


def _check_resume(path: Path, settings: dict[str, Any]) -> None:
    """Refuses to resume the run in ``path`` (its ``aisp_run.json``) with other settings, model, dtype or reward."""
    if not path.is_file():
        return
    previous = json.loads(path.read_text())
    differences = []
    for key in sorted(set(previous) | set(settings)):
        if key not in previous and key in _RESUME_FIXES:
            logger.warning("%s records no %s; it cannot be checked.", path, key)
            continue
        old, new = previous.get(key), settings.get(key)
        if isinstance(old, Mapping) and isinstance(new, Mapping):
            differences += [
                f"{key}.{name} {old.get(name)!r} then, {new.get(name)!r} now"
                for name in sorted(set(old) | set(new))
                if old.get(name) != new.get(name)
            ]
        elif old != new:
            flag = f" (`{_RESUME_FIXES[key]}`)" if key in _RESUME_FIXES else ""
            differences.append(f"{key}{flag} {old!r} then, {new!r} now")
    if differences:
        raise ValueError(
            f"`output_dir` {str(path.parent)!r} holds a run with other settings than this one: "
            f"{'; '.join(differences)}. Resume with the settings of that run, or pass a new `output_dir` "
            "(`generation_dir` in the recipes) to start a fresh one."
        )
