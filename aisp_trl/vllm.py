"""AISP on vLLM: `load_llm` builds a ``vllm.LLM`` that the samplers accept in place of a transformers model.

Install the optional extra first (``bash scripts/setup.sh --vllm``). vLLM starts its engine in a separate process:
put scripts under ``if __name__ == "__main__":``.

Example:
    ```python
    >>> from aisp_trl import AISPSampler, LengthSampler
    >>> from aisp_trl.vllm import load_llm
    >>> llm, tokenizer = load_llm(), load_tokenizer()  # the embedded SmolLM2-135M-Instruct
    >>> sampler = AISPSampler(llm, tokenizer, queries_to_scores, LengthSampler(32, 33), sample_size=8, seed=0)
    >>> sampler.generate(tokenizer("The movie was").input_ids)  # the same samples as with the HF model and seed 0
    ```
"""

from __future__ import annotations

import os
from typing import Any

from .decoding.vllm import VLLM_INSTALL_HINT, VLLMDecoder, check_engine, import_vllm, is_vllm_engine
from .models import EMBEDDED_MODEL, check_pretrained_source, embedded_model_dir

__all__ = [
    "VLLM_INSTALL_HINT",
    "VLLMDecoder",
    "PrelogitPerturbation",  # noqa: F822 (module __getattr__: importing it imports vLLM)
    "check_engine",
    "is_vllm_engine",
    "load_llm",
    "load_tokenizer",
]


def __getattr__(name: str) -> Any:
    if name == "PrelogitPerturbation":  # importing it imports vLLM
        import_vllm()
        from .decoding.vllm_processor import PrelogitPerturbation

        return PrelogitPerturbation
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _source(model_name_or_path: str | os.PathLike | None) -> str:
    if model_name_or_path is None or str(model_name_or_path) == EMBEDDED_MODEL:
        return str(embedded_model_dir())
    check_pretrained_source(str(model_name_or_path))
    return str(model_name_or_path)


def load_llm(model_name_or_path: str | os.PathLike | None = None, **engine_kwargs: Any) -> Any:
    """A ``vllm.LLM`` with AISP's logits processor registered, ready for the samplers.

    On a machine without CUDA it defaults to ``dtype="float32"``, ``enforce_eager=True`` (what the CPU backend runs
    best, and what makes its samples match the HF backend's) and ``gpu_memory_utilization=0.25`` (on vLLM's CPU
    backend, the share of the CPU memory it reserves; its 0.92 default fails next to other processes);
    ``engine_kwargs`` override any default. The
    processor targets vLLM's v1 model runner, so ``VLLM_USE_V2_MODEL_RUNNER=0`` is set unless already set.

    Args:
        model_name_or_path (`str` or `os.PathLike`, *optional*): a folder or a Hub id, as for ``vllm.LLM(model=...)``;
            ``None`` (or ``"smollm2-135m-instruct"``) loads the embedded SmolLM2-135M-Instruct (float32 folder).
        **engine_kwargs: passed to ``vllm.LLM``, e.g. ``tensor_parallel_size``, ``gpu_memory_utilization``,
            ``max_model_len``, ``seed``. ``logits_processors`` is extended, not replaced.

    Returns:
        `vllm.LLM`: the engine.

    Raises:
        ImportError: if vLLM is not installed (the message says how to install it).
        FileNotFoundError: if ``model_name_or_path`` is neither a folder nor a loadable Hub id.
        ValueError: for a soft-capped model (its logits are not linear in the pre-logit).

    Example:
        ```python
        >>> llm = load_llm(tensor_parallel_size=2, gpu_memory_utilization=0.8)  # in `if __name__ == "__main__":`
        ```
    """
    vllm = import_vllm()
    from .decoding.vllm_processor import PrelogitPerturbation

    os.environ.setdefault("VLLM_USE_V2_MODEL_RUNNER", "0")
    source = _source(model_name_or_path)
    from transformers import AutoConfig

    from .decoding.logit_shift import logit_scale

    logit_scale(AutoConfig.from_pretrained(source))  # a soft-capped model fails here, before the engine starts
    processors = list(engine_kwargs.pop("logits_processors", None) or [])
    if PrelogitPerturbation not in processors:
        processors.append(PrelogitPerturbation)
    import torch

    defaults: dict[str, Any] = {}
    if not torch.cuda.is_available():  # on vLLM's CPU backend gpu_memory_utilization is the share of CPU memory
        defaults = {"dtype": "float32", "enforce_eager": True, "gpu_memory_utilization": 0.25}
    llm = vllm.LLM(model=source, logits_processors=processors, **{**defaults, **engine_kwargs})
    check_engine(llm)
    return llm


def load_tokenizer(model_name_or_path: str | os.PathLike | None = None) -> Any:
    """The tokenizer of `load_llm`'s model, set up as `aisp_trl.models.load_model_and_tokenizer` sets it (left
    padding, a pad token)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(_source(model_name_or_path))
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None and tokenizer.eos_token is not None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer
