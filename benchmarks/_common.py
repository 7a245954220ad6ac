"""What the benchmarks share: the unit store (load-or-compute, atomic write, settings check), seed means and
re-scoring of saved samples with another reward.

A benchmark is a set of *units* (e.g. one reward x method x seed), each saved as one JSON file as soon as it
finishes, so a killed run resumes where it stopped. Every unit records the settings it was made with; a unit on disk
made with other settings is refused, naming what differs, instead of silently joining the report.
"""

from __future__ import annotations

import json
import math
import os
import re
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from aisp_trl.evaluation.report import json_default
from aisp_trl.rewards import RewardFunction
from aisp_trl.types import best_finite_index

__all__ = ["UnitStore", "atomic_write_json", "rescore_samples", "reward_key", "seed_mean"]


def atomic_write_json(path: Path, value: Any) -> None:
    """Writes ``value`` as JSON to ``path`` through a temporary file and one ``os.replace``: a file on disk is always
    complete, even when the run is killed while writing."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(value, default=json_default))
    os.replace(tmp, path)


class UnitStore:
    """The saved units of one benchmark run under ``<root>/units/``.

    Args:
        root (`Path`): the benchmark's output folder.
        settings (`Mapping`): what must not change between a unit and the units it is compared with, JSON-ready.
    """

    def __init__(self, root: str | os.PathLike, settings: Mapping[str, Any]):
        self.root = Path(root) / "units"
        self.settings = json.loads(json.dumps(dict(settings), default=json_default))

    def path(self, *parts: str) -> Path:
        """``<root>/units/<part>/.../<last part>.json``."""
        return self.root.joinpath(*parts[:-1], f"{parts[-1]}.json")

    def load(self, path: Path, identity: Mapping[str, Any] | None = None) -> dict[str, Any] | None:
        """The unit at ``path``, or None; a unit made with other settings (or another ``identity``: e.g. the method's
        overrides and full configuration) raises, naming what differs."""
        if not path.is_file():
            return None
        unit = json.loads(path.read_text())
        expected = {"settings": self.settings, **json.loads(json.dumps(dict(identity or {}), default=json_default))}
        differing = []
        for key, now in expected.items():
            then = unit.get(key)
            if then == now:
                continue
            if isinstance(then, dict) and isinstance(now, dict):  # name the fields, not the whole mapping
                differing += [f"{k}={then.get(k)!r} then ({now.get(k)!r} now)" for k in {**then, **now}
                              if then.get(k) != now.get(k)]  # fmt: skip
            else:
                differing.append(f"{key}={then!r} then ({now!r} now)")
        if differing:
            details = ", ".join(differing)
            raise ValueError(f"{path} was made with other settings ({details}; did a default change?); rerun with "
                             "those, or use another --output_dir (or delete the unit).")  # fmt: skip
        return unit

    def get_or_compute(
        self,
        path: Path,
        compute: Callable[[], dict[str, Any]],
        label: str,
        identity: Mapping[str, Any] | None = None,
        *,
        timed: bool = True,
    ) -> dict[str, Any]:
        """The saved unit at ``path`` if there is one (checked as in `load`); else ``compute()`` with the settings and
        ``identity`` recorded, written atomically. With ``timed``, the wall time of ``compute`` is added to the
        ``seconds`` the unit reports (a unit that times only part of its work itself passes ``timed=False``)."""
        saved = self.load(path, identity)
        if saved is not None:
            return saved
        start = time.perf_counter()
        unit = compute()
        if timed:
            unit["seconds"] = unit.get("seconds", 0.0) + time.perf_counter() - start
        unit.update(settings=self.settings, **(identity or {}))
        atomic_write_json(path, unit)
        print(f"[unit] {label}: {unit['seconds']:.0f} s", flush=True)
        return unit

    def units(self, pattern: str = "**/*.json", identity: Callable[[dict[str, Any]], bool] | None = None) -> list[dict]:
        """Every saved unit made with these settings (and accepted by ``identity``, when given)."""
        found = []
        for path in sorted(self.root.glob(pattern)):
            unit = json.loads(path.read_text())
            if unit.get("settings") == self.settings and (identity is None or identity(unit)):
                found.append(unit)
        return found


def reward_key(name: str) -> str:
    """A reward name as a folder name (a reward-model path becomes its characters, slashes replaced)."""
    return re.sub(r"[^A-Za-z0-9_.+-]+", "_", name).strip("_") or "reward"


def seed_mean(table: Sequence[Sequence[float]]) -> list[float]:
    """Per prompt, the mean over seeds (rows) of a ``seeds x prompts`` table, skipping NaN."""
    return torch.tensor(table, dtype=torch.float64).nanmean(0).tolist()


def rescore_samples(
    reward: RewardFunction, prompt: str, completions: Sequence[str], texts: Sequence[str]
) -> tuple[list[float], int | None]:
    """Scores one prompt's saved samples with ``reward``; returns their rewards and the index of the best one (the
    highest finite reward, first on ties, as `aisp_trl.types.SearchResult.best`; None when none is finite)."""
    n = len(completions)
    values = [float(v) for v in reward([prompt] * n, list(completions), list(texts)).tolist()]
    return values, best_finite_index(values)


def finite_mean(values: Sequence[float]) -> float:
    """The mean of the finite values, NaN when there are none."""
    finite = [v for v in values if math.isfinite(v)]
    return sum(finite) / len(finite) if finite else math.nan
