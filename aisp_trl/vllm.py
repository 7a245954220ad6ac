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

import contextlib
import os
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from .decoding.vllm import (
    PROBE_EXTENSION,
    VLLM_INSTALL_HINT,
    VLLMDecoder,
    check_engine,
    import_vllm,
    is_vllm_engine,
    verify_logit_shift,
)
from .models import EMBEDDED_MODEL, check_pretrained_source, embedded_model_dir

__all__ = [
    "CPU_MEMORY_SHARE",
    "VLLM_INSTALL_HINT",
    "VLLMDecoder",
    "PrelogitPerturbation",  # noqa: F822 (module __getattr__: importing it imports vLLM)
    "check_engine",
    "data_parallel_placement",
    "engine_environment",
    "free_llm",
    "is_vllm_engine",
    "load_llm",
    "load_tokenizer",
    "verify_logit_shift",
]


CPU_MEMORY_SHARE = 0.25
"""`load_llm`'s default ``gpu_memory_utilization`` without CUDA: on vLLM's CPU backend, the share of the CPU memory the
engine reserves (vLLM's 0.92 fails next to other processes); split between the engines of data-parallel processes."""


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


def load_llm(
    model_name_or_path: str | os.PathLike | None = None, *, verify_logit_shift: bool = True, **engine_kwargs: Any
) -> Any:
    """A ``vllm.LLM`` with AISP's logits processor registered, ready for the samplers.

    Once the engine runs, it is checked against the processor: the logits must move by ``logit_scale(config) * W v``
    when the hidden state entering the output layer moves by ``v`` (`aisp_trl.vllm.verify_logit_shift`, two calls of
    the output layer, no decoding); a model whose head multiplies its logits by a factor the processor does not know
    is refused, naming its architecture, instead of decoding with perturbations off by that factor.

    On a machine without CUDA it defaults to ``dtype="float32"``, ``enforce_eager=True`` (what the CPU backend runs
    best, and what makes its samples match the HF backend's) and ``gpu_memory_utilization=0.25`` (on vLLM's CPU
    backend, the share of the CPU memory it reserves; its 0.92 default fails next to other processes);
    ``engine_kwargs`` override any default. The
    processor targets vLLM's v1 model runner, so ``VLLM_USE_V2_MODEL_RUNNER=0`` is set unless already set.

    Args:
        model_name_or_path (`str` or `os.PathLike`, *optional*): a folder or a Hub id, as for ``vllm.LLM(model=...)``;
            ``None`` (or ``"smollm2-135m-instruct"``) loads the embedded SmolLM2-135M-Instruct (float32 folder).
        verify_logit_shift (`bool`, defaults to `True`): run the check above (it needs ``worker_extension_cls`` to be
            `aisp_trl.decoding.vllm.PROBE_EXTENSION`, set by default, or a subclass of it).
        **engine_kwargs: passed to ``vllm.LLM``, e.g. ``tensor_parallel_size``, ``gpu_memory_utilization``,
            ``max_model_len``, ``seed``. ``logits_processors`` is extended, not replaced.

    Returns:
        `vllm.LLM`: the engine.

    Raises:
        ImportError: if vLLM is not installed (the message says how to install it).
        FileNotFoundError: if ``model_name_or_path`` is neither a folder nor a loadable Hub id.
        ValueError: for a soft-capped model (its logits are not linear in the pre-logit), or one whose measured logit
            shift is not ``logit_scale(config) * W v`` (the engine is shut down first).

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
    if verify_logit_shift:
        engine_kwargs["worker_extension_cls"] = engine_kwargs.get("worker_extension_cls") or PROBE_EXTENSION
        _check_extension(engine_kwargs["worker_extension_cls"])
    import torch

    defaults: dict[str, Any] = {}
    if not torch.cuda.is_available():  # on vLLM's CPU backend gpu_memory_utilization is the share of CPU memory
        defaults = {"dtype": "float32", "enforce_eager": True, "gpu_memory_utilization": CPU_MEMORY_SHARE}
    llm = vllm.LLM(model=source, logits_processors=processors, **{**defaults, **engine_kwargs})
    try:
        check_engine(llm)
        if verify_logit_shift:
            from .decoding.vllm import verify_logit_shift as verify  # the argument of that name is the switch

            verify(llm)
    except BaseException:
        free_llm(llm)
        raise
    return llm


def _check_extension(extension: Any) -> None:
    """Refuses a ``worker_extension_cls`` that would replace the probe `verify_logit_shift` calls."""
    import importlib

    from .decoding.vllm_worker import LogitShiftProbe

    cls = extension
    if isinstance(extension, str):
        module, _, name = extension.rpartition(".")
        cls = getattr(importlib.import_module(module), name, None) if module else None
    if not (isinstance(cls, type) and issubclass(cls, LogitShiftProbe)):
        raise ValueError(
            f"`worker_extension_cls={extension!r}` replaces aisp_trl's {PROBE_EXTENSION}, which `load_llm` needs to "
            "check the engine's logit scale; make your extension a subclass of it, or pass "
            "`verify_logit_shift=False` to skip the check."
        )


def free_llm(llm: Any) -> None:
    """Shuts a ``vllm.LLM``'s engine down (its process, its GPU memory; best effort), e.g. before training loads the
    HF model, or after an engine failed a check."""
    import gc

    import torch

    core = getattr(getattr(llm, "llm_engine", None), "engine_core", None)
    if callable(getattr(core, "shutdown", None)):
        core.shutdown()
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def load_tokenizer(model_name_or_path: str | os.PathLike | None = None) -> Any:
    """The tokenizer of `load_llm`'s model, set up as `aisp_trl.models.load_model_and_tokenizer` sets it (left
    padding, a pad token)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(_source(model_name_or_path))
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None and tokenizer.eos_token is not None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


# -- data parallelism: one engine per process ---------------------------------------------------------------------
def data_parallel_placement(
    local_process_index: int,
    num_local_processes: int,
    tensor_parallel_size: int = 1,
    *,
    gpus: Sequence[str] | None = None,
    cpus: Sequence[int] | None = None,
) -> dict[str, str]:
    """The environment that gives one data-parallel process's vLLM engine its own devices (pure; no vLLM needed).

    With ``accelerate launch --num_processes P`` and ``use_vllm``, every process builds its own engine and decodes its
    own shard of the prompts. vLLM starts its engine in a child process that reads the environment when it starts,
    so the devices are handed over as environment variables: process ``i`` of a machine gets GPUs
    ``gpus[i*k:(i+1)*k]`` (``k = tensor_parallel_size``) as ``CUDA_VISIBLE_DEVICES``; on vLLM's CPU backend it gets
    the ``i``-th contiguous slice of the CPU cores as ``VLLM_CPU_OMP_THREADS_BIND`` (split into ``k`` parts joined by
    ``|`` for tensor parallelism), so that the engines do not fight over the same cores.

    Args:
        local_process_index (`int`): this process's index on its machine (accelerate's ``local_process_index``).
        num_local_processes (`int`): processes on this machine.
        tensor_parallel_size (`int`, defaults to 1): GPUs (or CPU slices) each engine splits the model over.
        gpus (`Sequence[str]`, *optional*): the visible GPU ids; empty or `None` means the CPU backend.
        cpus (`Sequence[int]`, *optional*): the CPU cores this machine may use (CPU backend only; default: this
            process's affinity).

    Returns:
        `dict[str, str]`: environment variables to set while the engine starts.

    Raises:
        ValueError: if the machine has fewer GPUs (or cores) than ``num_local_processes * tensor_parallel_size``.
    """
    for name, value, low in (
        ("num_local_processes", num_local_processes, 1),
        ("tensor_parallel_size", tensor_parallel_size, 1),
        ("local_process_index", local_process_index, 0),
    ):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"`{name}` must be an integer >= {low}, got {value!r}.")
    if local_process_index >= num_local_processes:
        raise ValueError(
            f"`local_process_index` must be < `num_local_processes` ({num_local_processes}), got {local_process_index}."
        )
    need = num_local_processes * tensor_parallel_size
    if gpus:
        if len(gpus) < need:
            raise ValueError(
                f"{num_local_processes} processes x `vllm_tensor_parallel_size` {tensor_parallel_size} need {need} "
                f"GPUs on this machine, but {len(gpus)} are visible ({','.join(gpus)}); launch fewer processes "
                "or lower `vllm_tensor_parallel_size`."
            )
        start = local_process_index * tensor_parallel_size
        return {"CUDA_VISIBLE_DEVICES": ",".join(gpus[start : start + tensor_parallel_size])}
    cores = sorted(cpus if cpus is not None else os.sched_getaffinity(0))
    if len(cores) < need:
        raise ValueError(
            f"{num_local_processes} processes x `vllm_tensor_parallel_size` {tensor_parallel_size} need {need} CPU "
            f"cores for vLLM's CPU backend, but this machine has {len(cores)}; launch fewer processes."
        )
    per_process = len(cores) // num_local_processes
    mine = cores[local_process_index * per_process : (local_process_index + 1) * per_process]
    per_rank = len(mine) // tensor_parallel_size
    parts = [mine[r * per_rank : (r + 1) * per_rank] for r in range(tensor_parallel_size)]
    return {"VLLM_CPU_OMP_THREADS_BIND": "|".join(",".join(map(str, part)) for part in parts)}


@contextlib.contextmanager
def engine_environment(overrides: Mapping[str, str]) -> Iterator[None]:
    """Sets ``overrides`` in ``os.environ`` while an engine starts (its child process inherits them), then restores
    the previous values, so that the rest of this process (training) sees the environment it had."""
    previous = {name: os.environ.get(name) for name in overrides}
    try:
        os.environ.update(overrides)
        yield
    finally:
        for name, value in previous.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def visible_gpus() -> list[str]:
    """The GPU ids this process may use (``CUDA_VISIBLE_DEVICES`` if set, else every device); empty without CUDA."""
    import torch

    if not torch.cuda.is_available():
        return []
    listed = os.environ.get("CUDA_VISIBLE_DEVICES")
    if listed:
        return [g.strip() for g in listed.split(",") if g.strip()]
    return [str(i) for i in range(torch.cuda.device_count())]
