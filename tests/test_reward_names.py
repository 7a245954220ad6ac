"""Every entry point accepts the same reward names (`aisp_trl.rewards.REWARD_NAMES`, `a+b`, a reward-model folder)
and refuses a bad one before any model loads."""

from __future__ import annotations

import time

import pytest
from _tiny import load_script

from aisp_trl import models
from aisp_trl.cli import GenerateArguments
from aisp_trl.pipeline import AISPGenerationArguments
from aisp_trl.pipeline.compare import CompareArguments
from aisp_trl.rewards import REWARD_NAMES, build_reward, check_reward_spec


def _entry_points(reward: str):
    """Each entry point's argument object for ``reward`` (the recipes' and CLI's dataclasses, the benchmarks'
    argument checks)."""
    yield lambda: GenerateArguments(reward=reward)  # aisp-trl generate
    yield lambda: AISPGenerationArguments(reward=reward)  # distill_aisp.py, aisp_dpo.py, amortize_aisp.py
    yield lambda: CompareArguments(reward=reward)  # recipes/compare.py, bench_quality.py
    yield lambda: load_script("recipes", "re_control").REControlScriptArguments(reward=reward)
    finetune = load_script("benchmarks", "bench_finetune")
    yield lambda: finetune.check_args(finetune.make_parser().parse_args(["--rewards", reward]))


@pytest.mark.parametrize("reward", ["vader", "relevance", "judge", "vader+relevance", "Relevance"])
def test_every_entry_point_accepts_the_package_reward_names(reward):
    for build in _entry_points(reward):
        build()  # no error: the names are checked, nothing is loaded


def test_every_entry_point_refuses_a_bad_reward_before_a_model_loads(monkeypatch, tmp_path):
    monkeypatch.setattr(models, "hub_reachable", lambda timeout=2.0: False)
    monkeypatch.setattr(
        models, "load_model_and_tokenizer", lambda *a, **k: pytest.fail("a model loaded before the reward check")
    )
    missing = str(tmp_path / "no-such-reward")
    start = time.perf_counter()
    for build in _entry_points(missing):
        with pytest.raises(FileNotFoundError, match=r"`reward` .*no-such-reward.*folder not found.*'vader'"):
            build()
    for spec in ("", "vader+", " + relevance"):
        with pytest.raises(ValueError, match="`reward`"):
            check_reward_spec(spec)
    assert time.perf_counter() - start < 10


def test_the_reward_table_builds_what_it_names():
    assert set(REWARD_NAMES) == {"vader", "relevance", "reference", "judge"}
    assert type(build_reward("VADER")).__name__ == "VaderSentimentReward"
