"""Shared pytest fixtures."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import torch

# the benchmark scripts import their shared module (`_common`) as scripts do: from their own folder
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))


@pytest.fixture(scope="module")
def one_torch_thread():
    """One torch thread for a module (``pytestmark = pytest.mark.usefixtures("one_torch_thread")``): tiny matmuls
    are ~50x slower with 2 threads on a busy 2-core machine. The setting is restored afterwards."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def model():
    """A tiny random 2-layer Llama built from a config (`_tiny.make_model`); test files may define their own."""
    from _tiny import make_model

    return make_model("llama")


@pytest.fixture(scope="module")
def tok():
    """The tiny character tokenizer of `_tiny` that goes with `model`."""
    from _tiny import make_tokenizer

    return make_tokenizer()


@pytest.fixture(scope="session")
def smollm2():
    """The embedded SmolLM2-135M-Instruct as `(model, tokenizer)`, loaded once per session (CPU, float32).

    Without the model's package the tests that use it skip and say why, except on CI (``CI`` set), which installs
    it: there a missing model must fail.
    """
    from aisp_trl.models import embedded_model_missing, load_model_and_tokenizer

    missing = embedded_model_missing()
    if missing is not None and not os.environ.get("CI"):
        pytest.skip(f"the embedded SmolLM2 is not installed: {missing}")
    return load_model_and_tokenizer()
