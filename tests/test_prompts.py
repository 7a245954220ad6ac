"""Tests for `aisp_trl.prompts.GENERAL_PROMPTS`, its fixed split and the ``general`` prompt sources (fast)."""

from __future__ import annotations

import re

import pytest

from aisp_trl.data import GENERAL_SOURCES, load_prompts
from aisp_trl.prompts import BUILTIN_PROMPTS, GENERAL_PROMPTS, PROMPT_SPLITS, prompt_split


def _norm(prompt: str) -> str:
    return re.sub(r"[^a-z0-9]+", " ", prompt.lower()).strip()


def test_general_prompt_counts():
    assert len(GENERAL_PROMPTS) >= 240
    assert len(prompt_split("held_out")) >= 48
    assert len(prompt_split("train")) >= 192
    assert len(prompt_split("tune")) == 16
    assert len(prompt_split("bench")) == 32
    assert len(prompt_split("train")) + len(prompt_split("held_out")) == len(GENERAL_PROMPTS)


def test_general_prompts_are_short_single_strings():
    for prompt in GENERAL_PROMPTS:
        assert isinstance(prompt, str)
        assert prompt == prompt.strip() and "\n" not in prompt
        assert 3 <= len(prompt.split()) < 25, prompt
        assert prompt[-1] in ".?!", prompt


def test_general_prompts_have_no_duplicates():
    normalised = [_norm(p) for p in GENERAL_PROMPTS]
    duplicates = sorted({p for p in normalised if normalised.count(p) > 1})
    assert not duplicates
    assert not {_norm(p) for p in BUILTIN_PROMPTS} & set(normalised)


def test_tune_and_bench_are_disjoint_subsets():
    train, held_out = prompt_split("train"), prompt_split("held_out")
    tune, bench = prompt_split("tune"), prompt_split("bench")
    assert not set(tune) & set(bench)
    assert not set(train) & set(held_out)
    assert set(tune) <= set(train) and tune == train[: len(tune)]
    assert set(bench) <= set(held_out) and bench == held_out[: len(bench)]


def test_split_is_by_index_and_stable():
    # the split rule itself: any change to it (or an insertion / reorder in the tuple) fails here
    assert prompt_split("held_out") == [p for i, p in enumerate(GENERAL_PROMPTS) if i % 5 == 4]
    assert prompt_split("train") == [p for i, p in enumerate(GENERAL_PROMPTS) if i % 5 != 4]
    # pinned anchors: the first held-out prompts and the first tune prompt never move (append-only tuple)
    assert prompt_split("held_out")[:2] == [
        "What do you think about learning to cook as a teenager?",
        "Why does bread go stale after a few days?",
    ]
    assert prompt_split("tune")[0] == "Why is the sky blue during the day?"
    # calls return fresh lists: mutating one does not change the next
    prompt_split("train").clear()
    assert len(prompt_split("train")) >= 192


@pytest.mark.parametrize("name", ["test", "heldout", "", "Train"])
def test_bad_split_name(name):
    with pytest.raises(ValueError, match=r"`name`.*held_out.*bench") as info:
        prompt_split(name)
    assert repr(name) in str(info.value)


@pytest.mark.parametrize("name", PROMPT_SPLITS)
def test_general_sources_load(name):
    assert load_prompts(f"general:{name}") == prompt_split(name)


def test_general_source_loads_all_and_cuts():
    assert load_prompts("general") == list(GENERAL_PROMPTS)
    assert load_prompts("general:held_out", max_prompts=5) == prompt_split("held_out")[:5]
    assert set(GENERAL_SOURCES) == {"general", *(f"general:{name}" for name in PROMPT_SPLITS)}
    assert load_prompts("builtin") == list(BUILTIN_PROMPTS)


def test_bad_general_source():
    with pytest.raises(ValueError, match=r"general:test.*general:held_out"):
        load_prompts("general:test")
