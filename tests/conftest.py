"""Shared pytest fixtures."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def smollm2():
    """The embedded SmolLM2-135M-Instruct as `(model, tokenizer)`, loaded once per session (CPU, float32)."""
    from aisp_trl.models import load_model_and_tokenizer

    return load_model_and_tokenizer()
