"""Tiny checkpoints saved with ``save_pretrained``, so recipes and subprocesses load them by path."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
from transformers import AutoModelForSequenceClassification, LlamaConfig

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from _tiny import EOS_ID, PAD_ID, VOCAB, make_model, make_tokenizer  # noqa: E402


def save_tokenizer(path: Path) -> None:
    """Saves the character tokenizer so that ``AutoTokenizer`` reloads it as is.

    transformers 5 reloads some families with their own class (qwen2 gets ``Qwen2Tokenizer``, which drops the
    spaces of this tokenizer), so the tiny checkpoints are Llama models and the class is pinned.
    """
    make_tokenizer().save_pretrained(path)
    config_file = path / "tokenizer_config.json"
    config = json.loads(config_file.read_text())
    config["tokenizer_class"] = "PreTrainedTokenizerFast"
    config_file.write_text(json.dumps(config, indent=2))


def save_tiny_lm(path: str | Path, arch: str = "llama", seed: int = 0) -> Path:
    """A 2-layer causal LM and the character tokenizer in ``path``."""
    path = Path(path)
    make_model(arch, seed=seed).save_pretrained(path)
    save_tokenizer(path)
    return path


def save_tiny_reward_model(path: str | Path, seed: int = 1) -> Path:
    """A 1-label sequence classifier (random weights, so rewards vary) and the character tokenizer in ``path``."""
    path = Path(path)
    config = LlamaConfig(
        vocab_size=len(VOCAB),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=256,
        num_labels=1,
        pad_token_id=PAD_ID,
        eos_token_id=EOS_ID,
        bos_token_id=EOS_ID,
    )
    torch.manual_seed(seed)
    AutoModelForSequenceClassification.from_config(config).save_pretrained(path)
    save_tokenizer(path)
    return path
