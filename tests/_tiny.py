"""Tiny models and a character tokenizer built from configs: no Hub, a few ms each."""

from __future__ import annotations

import string

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from torch import nn
from transformers import (
    AutoModelForCausalLM,
    Gemma2Config,
    GPT2Config,
    LlamaConfig,
    PreTrainedTokenizerFast,
    Qwen2Config,
)

SPECIALS = ["<pad>", "<eos>"]
CHARS = list(string.ascii_lowercase + " .,!?")
VOCAB = {tok: i for i, tok in enumerate(SPECIALS + CHARS)}
PAD_ID, EOS_ID = VOCAB["<pad>"], VOCAB["<eos>"]
ARCHS = ("gpt2", "llama", "qwen2", "gemma2")


def make_tokenizer(pad: bool = True) -> PreTrainedTokenizerFast:
    """A character-level tokenizer: one token per letter, space or punctuation mark."""
    backend = Tokenizer(models.WordLevel(vocab=VOCAB, unk_token="<pad>"))
    backend.pre_tokenizer = pre_tokenizers.Split(pattern="", behavior="isolated")
    backend.decoder = decoders.Fuse()
    # the pad token goes through the constructor: set afterwards, transformers 5 does not treat it as special and
    # `decode(skip_special_tokens=True)` keeps "<pad>", unlike the same tokenizer saved and loaded again
    specials = {"pad_token": "<pad>"} if pad else {}
    return PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="<eos>", padding_side="left", **specials)


def make_model(arch: str = "llama", seed: int = 0, hidden: int = 32) -> nn.Module:
    """A 2-layer causal LM of the given family with random weights (seeded)."""
    common = dict(vocab_size=len(VOCAB), bos_token_id=EOS_ID, eos_token_id=EOS_ID, pad_token_id=PAD_ID)
    if arch == "gpt2":
        config = GPT2Config(n_embd=hidden, n_layer=2, n_head=2, n_positions=128, **common)
    elif arch in ("llama", "qwen2", "gemma2"):
        config_class = {"llama": LlamaConfig, "qwen2": Qwen2Config, "gemma2": Gemma2Config}[arch]
        extra = {"head_dim": 16} if arch == "gemma2" else {}
        config = config_class(
            hidden_size=hidden,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            num_key_value_heads=1,
            max_position_embeddings=128,
            **extra,
            **common,
        )
    else:
        raise ValueError(arch)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config).eval()
    model.generation_config.pad_token_id = PAD_ID
    model.generation_config.eos_token_id = EOS_ID
    return model


def letter_reward(letter: str = "e"):
    """A ``queries_to_scores`` callable: how often ``letter`` appears in each text."""

    def queries_to_scores(texts: list[str]) -> list[float]:
        return [t.count(letter) / max(len(t), 1) for t in texts]

    return queries_to_scores


class ValueHeadWrapper(nn.Module):
    """Minimal stand-in for trl's old ``AutoModelForCausalLMWithValueHead`` (gone from trl >= 0.29)."""

    def __init__(self, pretrained_model: nn.Module):
        super().__init__()
        self.pretrained_model = pretrained_model
        self.v_head = nn.Linear(pretrained_model.config.hidden_size, 1)

    def generate(self, *args, **kwargs):
        return self.pretrained_model.generate(*args, **kwargs)


def chat_queries(tokenizer, prompts: list[str]) -> list[list[int]]:
    """Token ids of each prompt as a user message in the tokenizer's chat template."""
    from aisp_trl.prompts import apply_chat_template

    return [tokenizer(t, add_special_tokens=False).input_ids for t in apply_chat_template(tokenizer, prompts)]


def load_script(folder: str, name: str):
    """A recipe or benchmark script (``recipes/<name>.py``, ``benchmarks/<name>.py``) as a module, registered in
    ``sys.modules`` (the scripts define dataclasses, which look their module up)."""
    import importlib.util
    import sys
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / folder / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"{folder}_{name}", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module
