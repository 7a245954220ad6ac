"""The generation pipeline: AISP over a prompt set, sharded with accelerate, resumable, then datasets and reports.

[`run_generation`] splits the pending prompts between processes (``split_between_processes``), runs batched AISP
per process, records the base model's plain greedy response next to AISP's samples, appends one JSON record per
prompt to ``output_dir/shards/records-{rank:05d}.jsonl`` after each prompt batch, and, once every process is done,
reads all shards back from disk (nothing but a barrier goes between processes, so ``output_dir`` must be on a file
system all processes share). A killed run resumes: prompts whose records are on disk are skipped, none is written
twice; ``aisp_run.json`` records the settings, model, dtype and reward, and a resume with others is refused.
Each prompt's noise stream is derived from the seed and its token ids, so the records do not depend on how the
prompts were split or resumed (exactly so with ``prompt_batch_size=1``; up to padding noise otherwise).

Example:
    ```python
    >>> from aisp_trl import AISPConfig
    >>> from aisp_trl.models import load_model_and_tokenizer
    >>> from aisp_trl.pipeline import build_reward, run_generation
    >>> model, tokenizer = load_model_and_tokenizer()
    >>> records = run_generation(model, tokenizer, build_reward("vader"), ["Describe a rainy day."],
    ...                          AISPConfig(sample_size=8, n_iterations=4, seed=0), "aisp-out", max_new_tokens=32)
    >>> records[0]["best"]["completion"], records[0]["greedy"]["completion"]
    ```
"""

from __future__ import annotations

import copy
import importlib.util
import json
import logging
import math
import os
import secrets
import statistics
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import torch
from accelerate import PartialState
from accelerate.utils import broadcast_object_list, gather_object
from torch import nn
from tqdm.auto import tqdm
from transformers import GenerationConfig

from .baselines import GaussianBestOfNSampler
from .config import AISPConfig
from .data import (
    BUILTIN,
    DATASET_FORMATS,
    FRAMINGS,
    GENERAL,
    PREPROCESSINGS,
    REJECTED_CHOICES,
    Prompt,
    load_prompts,
    prompt_text,
    render_prompt,
    resolve_framing,
    save_dataset,
)
from .decoding.vllm import VLLM_INSTALL_HINT, is_vllm_engine
from .hooks import generation_model
from .models import EMBEDDED_MODEL, check_device, check_pretrained_source, hub_offline, load_model_and_tokenizer
from .rewards import RewardFunction, SequenceClassifierReward, VaderSentimentReward, as_reward_function
from .sampler import AISPSampler, BestOfNSampler, GreedySampler, LengthSampler

logger = logging.getLogger(__name__)

SHARD_DIR = "shards"
RECORDS_FILE = "records.jsonl"
MEANS_PREFIX = "means"
RUN_FILE = "aisp_run.json"
TRAINING_MARKER = "aisp_training.json"
_AISP_FIELDS = (
    "sample_size",
    "n_iterations",
    "sigma2",
    "lam",
    "alpha",
    "ess_target",
    "proposal",
    "rho",
    "sigma_decay",
    "reuse_samples",
    "prompt_batch_size",
)
_AISP_DEFAULTS = {f.name: f.default for f in fields(AISPConfig)}
_AISP_HELP = {f.name: dict(f.metadata) for f in fields(AISPConfig)}


@dataclass
class AISPGenerationArguments:
    """Arguments of the AISP generation step of the recipes (prompts, reward, AISP, datasets).

    Field names avoid those of trl's ``SFTConfig`` / ``DPOConfig`` / ``ModelConfig`` so that the three parse
    together with ``TrlParser`` (hence ``generation_dir`` and ``aisp_seed`` rather than ``output_dir`` / ``seed``).
    """

    generation_dir: str | None = field(
        default=None,
        metadata={"help": "Folder of the generation shards, records and datasets; defaults to `<output_dir>/aisp`."},
    )
    prompt_source: str = field(
        default=BUILTIN,
        metadata={
            "help": "'builtin', 'general' (project-written prompts with a fixed train / held-out split; also "
            "'general:train', 'general:held_out', 'general:tune', 'general:bench'), a .json/.jsonl file, a folder "
            "saved with save_to_disk, or a Hugging Face dataset (e.g. Anthropic/hh-rlhf, stanfordnlp/SHP)."
        },
    )
    prompt_config: str | None = field(default=None, metadata={"help": "Dataset configuration name."})
    prompt_split: str = field(default="train", metadata={"help": "Dataset split to read prompts from."})
    prompt_column: str = field(
        default="prompt",
        metadata={"help": "Column with the prompt (string or list of messages); `messages` is tried next."},
    )
    prompt_preprocessing: str = field(
        default="auto",
        metadata={"help": f"One of {PREPROCESSINGS}: HH-RLHF / SHP preparation of paper App. C.3, or none."},
    )
    prompt_shuffle_seed: int | None = field(
        default=None, metadata={"help": "Shuffle the prompts with this seed before selecting them."}
    )
    max_prompts: int | None = field(
        default=16, metadata={"help": "Prompts to generate for (training prompts); None takes all but the held-out."}
    )
    num_eval_prompts: int = field(
        default=8,
        metadata={
            "help": "Held-out prompts for the greedy evaluation, fixed whatever max_prompts is: the first ones of "
            "'general:held_out' for 'general' / 'general:train', else the source's first num_eval_prompts (after "
            "shuffling, if asked); training prompts come after them."
        },
    )
    held_out_rule: str = field(
        default="", init=False, metadata={"help": "Set by `load_prompts`: which prompts were held out (for reports)."}
    )
    framing: str = field(
        default="auto",
        metadata={
            "help": f"One of {FRAMINGS}: the tokenizer's chat template, the App. C.3 begin/finish words "
            "('user': 'User:'/'Assistant:' for Llama and Gemma, 'human': 'Human:'/'Assistant:' for Vicuna), the raw "
            "text, or auto (chat template if the tokenizer has one, else 'user')."
        },
    )
    max_prompt_length: int | None = field(
        default=None, metadata={"help": "Keep at most this many prompt tokens (the last ones), as in App. C.3."}
    )
    max_new_tokens: int = field(default=32, metadata={"help": "tau: new tokens per response (AISP and greedy)."})
    reward: str = field(
        default="vader",
        metadata={"help": "'vader' (VADER sentiment of the response) or a sequence-classification reward model path."},
    )
    reward_max_length: int = field(default=1024, metadata={"help": "Token limit of the reward model's inputs."})
    # AISP hyper-parameters: defaults and help come from `AISPConfig`, so the two never drift apart
    sample_size: int = field(default=_AISP_DEFAULTS["sample_size"], metadata=_AISP_HELP["sample_size"])
    n_iterations: int = field(default=_AISP_DEFAULTS["n_iterations"], metadata=_AISP_HELP["n_iterations"])
    sigma2: float = field(default=_AISP_DEFAULTS["sigma2"], metadata=_AISP_HELP["sigma2"])
    lam: str = field(default=_AISP_DEFAULTS["lam"], metadata=_AISP_HELP["lam"])
    alpha: float = field(default=_AISP_DEFAULTS["alpha"], metadata=_AISP_HELP["alpha"])
    ess_target: float = field(default=_AISP_DEFAULTS["ess_target"], metadata=_AISP_HELP["ess_target"])
    proposal: str = field(default=_AISP_DEFAULTS["proposal"], metadata=_AISP_HELP["proposal"])
    rho: float = field(default=_AISP_DEFAULTS["rho"], metadata=_AISP_HELP["rho"])
    sigma_decay: float = field(default=_AISP_DEFAULTS["sigma_decay"], metadata=_AISP_HELP["sigma_decay"])
    reuse_samples: bool = field(default=_AISP_DEFAULTS["reuse_samples"], metadata=_AISP_HELP["reuse_samples"])
    prompt_batch_size: int = field(default=4, metadata={"help": "Batched AISP: prompts per batch and process."})
    aisp_seed: int | None = field(
        default=0, metadata={"help": "Seed of the AISP noise (a fixed seed makes a resumed run reproducible)."}
    )
    dataset_format: str = field(
        default="auto",
        metadata={
            "help": f"One of {DATASET_FORMATS} or auto (conversational with a chat template framing, else standard)."
        },
    )
    rejected: str = field(
        default="worst",
        metadata={"help": f"Preference pairs: rejected response, one of {REJECTED_CHOICES} (chosen = AISP's best)."},
    )
    drop_nonpositive_margin: bool = field(
        default=True, metadata={"help": "Drop preference pairs whose reward margin (chosen - rejected) is <= 0."}
    )
    eval_batch_size: int = field(default=8, metadata={"help": "Prompts per greedy-evaluation batch."})
    generation_method: str = field(
        default="aisp",
        metadata={
            "help": "Where the training samples come from: 'aisp', or a best-of-N baseline at the same budget "
            "N = sample_size * n_iterations: 'bon_top_p' (top-p 0.9, T = 1) or 'bon_gaussian' (BoN (N), sigma2)."
        },
    )
    use_vllm: bool = field(
        default=False,
        metadata={
            "help": "Generate (the samples and the greedy records) on a vLLM engine (`bash scripts/setup.sh --vllm`): "
            "the same samples as the HF backend for a seed, up to float rounding. Every `accelerate launch` process "
            "gets its own engine and shard of the prompts (data parallelism), each engine `vllm_tensor_parallel_size` "
            "GPUs (tensor parallelism). The engines are freed before training, which loads the HF model."
        },
    )
    vllm_gpu_memory_utilization: float = field(
        default=0.9, metadata={"help": "With use_vllm: fraction of GPU memory vLLM may take (weights + KV cache)."}
    )
    vllm_tensor_parallel_size: int = field(
        default=1, metadata={"help": "With use_vllm: GPUs the model is split over (tensor parallelism)."}
    )
    save_means: bool = field(
        default=False,
        metadata={
            "help": "Store each prompt's final AISP mean U and the perturbation V of its best response (shape "
            "(tau, d)) in shards/means-<rank>.safetensors, keyed by prompt id: the targets of recipes/amortize_aisp.py."
        },
    )
    push_dataset_to_hub: str | None = field(
        default=None, metadata={"help": "Hub dataset repository id to push the generated dataset to."}
    )
    overwrite_output_dir: bool = field(
        default=False,
        metadata={
            "help": "Train again when `output_dir` already holds a finished training (its `aisp_training.json`); "
            "by default such a run is skipped with a message. The AISP records are reused either way."
        },
    )

    def __post_init__(self) -> None:
        self.lam = self.aisp_config().lam  # validates the AISP fields, naming the bad one; "0.3" -> 0.3
        choices = {
            "prompt_preprocessing": PREPROCESSINGS,
            "framing": FRAMINGS,
            "dataset_format": (*DATASET_FORMATS, "auto"),
            "rejected": REJECTED_CHOICES,
            "generation_method": GENERATION_METHODS,
        }
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"`{name}` must be one of {allowed}, got {getattr(self, name)!r}.")
        for name, low in (("max_new_tokens", 1), ("num_eval_prompts", 0), ("eval_batch_size", 1)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"`{name}` must be an integer >= {low}, got {value!r}.")
        for name in ("max_prompts", "max_prompt_length"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ValueError(f"`{name}` must be an integer >= 1 or None, got {value!r}.")
        size = self.vllm_tensor_parallel_size
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise ValueError(f"`vllm_tensor_parallel_size` must be an integer >= 1, got {size!r}.")
        share = self.vllm_gpu_memory_utilization
        if isinstance(share, bool) or not isinstance(share, int | float) or not 0 < share <= 1:
            raise ValueError(f"`vllm_gpu_memory_utilization` must lie in (0, 1], got {share!r}; vLLM's default is 0.9.")
        if self.use_vllm and importlib.util.find_spec("vllm") is None:
            raise ValueError(
                f"`use_vllm` is true but vLLM is not installed here; install it with `{VLLM_INSTALL_HINT}`, or set "
                "`use_vllm: false` to generate with the HF model."
            )

    def vllm_engine_kwargs(self) -> dict[str, Any]:
        """``vllm.LLM`` keyword arguments of these arguments (the GPU memory share only where there is a GPU)."""
        kwargs: dict[str, Any] = {"tensor_parallel_size": self.vllm_tensor_parallel_size}
        if torch.cuda.is_available():
            kwargs["gpu_memory_utilization"] = self.vllm_gpu_memory_utilization
        return kwargs

    def aisp_config(self) -> AISPConfig:
        """The `AISPConfig` of these arguments."""
        return AISPConfig(**{name: getattr(self, name) for name in _AISP_FIELDS}, seed=self.aisp_seed)

    def output_path(self, output_dir: str | os.PathLike) -> Path:
        """``generation_dir``, or ``<output_dir>/aisp`` when it is unset."""
        return Path(self.generation_dir) if self.generation_dir else Path(output_dir) / "aisp"

    def resolved_dataset_format(self, tokenizer: Any) -> str:
        """``dataset_format``, with ``"auto"`` resolved from the framing."""
        if self.dataset_format != "auto":
            return self.dataset_format
        return "conversational" if resolve_framing(self.framing, tokenizer) == "chat_template" else "standard"

    def load_prompts(self) -> tuple[list[Prompt], list[Prompt]]:
        """The training prompts (``max_prompts``) and the held-out ones (``num_eval_prompts``).

        The held-out set never depends on ``max_prompts``, so changing it never turns a held-out prompt into a
        training prompt:

        - ``"general"`` and ``"general:train"``: the first ``num_eval_prompts`` of the fixed ``"general:held_out"``
          split (`aisp_trl.prompts.prompt_split`) are held out; the training prompts are the first ``max_prompts``
          of ``"general:train"`` (after shuffling, if asked; the held-out prompts are never shuffled);
        - any other source (``"builtin"``, files, datasets, the other ``"general:*"`` splits): its first
          ``num_eval_prompts`` prompts (after shuffling with ``prompt_shuffle_seed``, if set) are held out and the
          training prompts are the next ``max_prompts``. Taking the first ones keeps the set fixed when a source
          grows at its end, and reads only ``num_eval_prompts + max_prompts`` rows of a large dataset.

        The rule is logged with the held-out prompts, and stored in ``held_out_rule`` (reported by `run_info`).

        Raises:
            ValueError: If the source has fewer than ``num_eval_prompts`` plus ``max_prompts`` (at least one) prompts.
        """
        common = {
            "config": self.prompt_config,
            "split": self.prompt_split,
            "prompt_column": self.prompt_column,
            "preprocessing": self.prompt_preprocessing,
        }
        n_eval = self.num_eval_prompts
        if self.prompt_source in (GENERAL, f"{GENERAL}:train"):
            train_pool = load_prompts(f"{GENERAL}:train", **common, shuffle_seed=self.prompt_shuffle_seed)
            held_out_pool = load_prompts(f"{GENERAL}:held_out", **common)
            train, held_out = train_pool[: self.max_prompts], held_out_pool[:n_eval]
            available = (len(train_pool), len(held_out_pool))
            rule = f"the first {n_eval} prompts of the fixed 'general:held_out' split (aisp_trl.prompts.prompt_split)"
        else:
            limit = None if self.max_prompts is None else n_eval + self.max_prompts
            seed = self.prompt_shuffle_seed
            prompts = load_prompts(self.prompt_source, **common, max_prompts=limit, shuffle_seed=seed)
            held_out, train = prompts[:n_eval], prompts[n_eval:]
            available = (max(len(prompts) - n_eval, 0), min(len(prompts), n_eval))
            shuffled = "" if seed is None else f" after shuffling with seed {seed}"
            rule = f"the first {n_eval} prompts of {self.prompt_source!r}{shuffled}; training prompts follow them"
        if not train or len(held_out) < n_eval or (self.max_prompts is not None and len(train) < self.max_prompts):
            raise ValueError(
                f"`prompt_source` {self.prompt_source!r} has too few prompts for max_prompts={self.max_prompts} plus "
                f"num_eval_prompts={n_eval} (at most {available[0]} training and {available[1]} held-out ones with "
                "these settings); lower them."
            )
        self.held_out_rule = f"held out: {rule}, independent of max_prompts"
        logger.info(
            "%d training prompts, %d %s: %s",
            len(train),
            len(held_out),
            self.held_out_rule,
            [prompt_text(p)[:60] for p in held_out],
        )
        return train, held_out

    def run_info(self) -> dict[str, Any]:
        """The generation settings, as recorded in reports and dataset cards."""
        skip = ("push_dataset_to_hub", "overwrite_output_dir")
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name not in skip}


def build_reward(
    spec: str | RewardFunction, device: str | torch.device | None = None, max_length: int = 1024
) -> RewardFunction:
    """A reward from its name: ``"vader"``, or the path / Hub id of a sequence-classification reward model.

    Args:
        spec (`str` or `RewardFunction`): ``"vader"``, a reward-model path, or an adapter (returned as is).
        device (`str` or `torch.device`, *optional*): where the reward model goes.
        max_length (`int`, defaults to 1024): token limit of the reward model's inputs (paper App. C.3).

    Raises:
        FileNotFoundError: If ``spec`` is neither a folder nor a Hub id that loads here (in seconds without network,
            see `aisp_trl.models.check_pretrained_source`).
        ValueError: If it does not load as a sequence-classification model, or ``device`` does not exist here.
    """
    if not isinstance(spec, str):
        return as_reward_function(spec)
    if spec.lower() == "vader":
        return VaderSentimentReward()
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    check_device(device)
    try:
        extra = check_pretrained_source(spec, "reward")
    except FileNotFoundError as error:
        raise FileNotFoundError(f"{error} (`reward` also takes 'vader'.)") from None
    try:
        with hub_offline(bool(extra)):
            model = AutoModelForSequenceClassification.from_pretrained(spec, **extra)
            tokenizer = AutoTokenizer.from_pretrained(spec, **extra)
    except OSError as error:
        raise ValueError(
            f"`reward` {spec!r} is neither 'vader' nor a loadable sequence-classification reward model ({error}); "
            "pass 'vader' or the folder of an AutoModelForSequenceClassification checkpoint."
        ) from error
    if device is not None:
        model.to(device)
    return SequenceClassifierReward(model, tokenizer, max_length=max_length)


def tokenize_prompts(
    tokenizer: Any, prompts: Sequence[Prompt], framing: str = "auto", max_prompt_length: int | None = None
) -> tuple[list[str], list[list[int]]]:
    """Framed prompt texts and their token ids (the last ``max_prompt_length`` tokens when set)."""
    queries = [render_prompt(tokenizer, p, framing) for p in prompts]
    has_template = resolve_framing(framing, tokenizer) == "chat_template"
    ids = [tokenizer(q, add_special_tokens=not has_template).input_ids for q in queries]
    if max_prompt_length is not None:
        ids = [q[-max_prompt_length:] for q in ids]
    return queries, ids


def greedy_records(
    model: nn.Module,
    tokenizer: Any,
    reward: RewardFunction,
    query_ids: Sequence[list[int]],
    reward_prompts: Sequence[str],
    max_new_tokens: int,
    batch_size: int = 8,
) -> list[dict[str, Any]]:
    """The base model's greedy response to each query, scored: ``{"completion", "completion_ids", "reward"}``."""
    horizon = LengthSampler(max_new_tokens, max_new_tokens + 1)
    sampler = GreedySampler(model, tokenizer, reward, horizon, prompt_batch_size=batch_size)
    results = sampler.search(list(query_ids), prompts=list(reward_prompts))
    return [
        {"completion": r.best.completion, "completion_ids": r.best.completion_ids, "reward": r.best.reward}
        for r in results
    ]


def default_state() -> PartialState:
    """The process group of ``accelerate launch`` (or a single process).

    On a machine without an accelerator the state is created with ``cpu=True``, so that ``accelerate launch
    --multi_gpu --num_processes N`` there runs N gloo processes (accelerate's CPU multi-process mode). An already
    initialised state (e.g. by ``TrainingArguments``: pass ``use_cpu=True`` there for CPU processes) is returned as is.
    """
    return PartialState(cpu=not torch.accelerator.is_available())


# -- shards ------------------------------------------------------------------------------------------------------
def shard_path(output_dir: str | os.PathLike, rank: int) -> Path:
    """``output_dir/shards/records-{rank:05d}.jsonl``."""
    return Path(output_dir) / SHARD_DIR / f"records-{rank:05d}.jsonl"


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Reads records, skipping a truncated last line (a run killed while writing)."""
    records = []
    lines = path.read_text().split("\n")
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            if i < len(lines) - 1:  # only the last line may be cut short
                raise ValueError(f"{path}: line {i + 1} is not valid JSON; delete the file to regenerate it.") from None
    return records


def _repair_shard(path: Path, chunk_size: int = 1 << 16) -> None:
    """Cuts a shard after its last complete line, in place, so that appends start on a fresh line.

    Only the cut tail is removed (``truncate`` then ``fsync``); the complete lines are never rewritten, so a kill
    during the repair cannot lose them.
    """
    if not path.is_file():
        return
    with path.open("r+b") as f:
        end = f.seek(0, os.SEEK_END)
        if end == 0:
            return
        f.seek(end - 1)
        if f.read(1) == b"\n":
            return
        keep, position = 0, end
        while position > 0:  # scan backwards for the last newline, one chunk at a time
            start = max(0, position - chunk_size)
            f.seek(start)
            newline = f.read(position - start).rfind(b"\n")
            if newline >= 0:
                keep = start + newline + 1
                break
            position = start
        logger.warning("%s: dropping a cut last line (%d bytes) left by an interrupted run.", path, end - keep)
        f.truncate(keep)
        f.flush()
        os.fsync(f.fileno())


def means_path(output_dir: str | os.PathLike, rank: int) -> Path:
    """``output_dir/shards/means-{rank:05d}.safetensors``: the stored means of one process's prompts."""
    return Path(output_dir) / SHARD_DIR / f"{MEANS_PREFIX}-{rank:05d}.safetensors"


def _append_means(path: Path, new: Mapping[str, torch.Tensor]) -> None:
    """Adds tensors to a safetensors file: the old ones and the new ones go to a temporary file that replaces it in
    one ``os.replace``, so a killed run leaves either the old file or the new one, never a cut one."""
    from safetensors.torch import load_file, save_file

    tensors = load_file(str(path)) if path.is_file() else {}
    tensors.update({k: v.detach().float().cpu().contiguous() for k, v in new.items()})
    tmp = path.with_name(path.name + ".tmp")
    save_file(tensors, str(tmp))
    with tmp.open("rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)


def load_means(output_dir: str | os.PathLike) -> dict[int, dict[str, torch.Tensor]]:
    """The means stored by ``run_generation(..., save_means=True)``: prompt id -> ``{"mean": U, "best": V}``, each of
    shape `(tau, d)` (`(1, d)` means for the steering proposal), float32 on CPU."""
    from safetensors.torch import load_file

    means: dict[int, dict[str, torch.Tensor]] = {}
    for path in sorted((Path(output_dir) / SHARD_DIR).glob(f"{MEANS_PREFIX}-*.safetensors")):
        for key, tensor in load_file(str(path)).items():
            prompt_id, name = key.split(".", 1)
            means.setdefault(int(prompt_id), {})[name] = tensor
    return means


def load_records(output_dir: str | os.PathLike) -> list[dict[str, Any]]:
    """All records in ``output_dir``'s shards, one per prompt id, sorted by prompt id."""
    by_id: dict[int, dict[str, Any]] = {}
    for path in sorted((Path(output_dir) / SHARD_DIR).glob("records-*.jsonl")):
        for record in _read_jsonl(path):
            by_id.setdefault(int(record["prompt_id"]), record)
    return [by_id[i] for i in sorted(by_id)]


def _run_settings(
    aisp_config: AISPConfig,
    max_new_tokens: int,
    framing: str,
    max_prompt_length: int | None,
    identity: Mapping[str, str] | None = None,
) -> dict:
    return {
        "aisp": asdict(aisp_config),
        "max_new_tokens": max_new_tokens,
        "framing": framing,
        "max_prompt_length": max_prompt_length,
        **(identity or {}),
    }


def _name_or_path(name: str) -> str:
    """A model or reward name as recorded: an existing folder as its absolute path, anything else as given."""
    return str(Path(name).resolve()) if name and Path(name).is_dir() else name


def run_identity(
    model: nn.Module, reward: RewardFunction, model_name: str | None = None, reward_name: str | None = None
) -> dict[str, str]:
    """What a resumed run must share with the interrupted one besides the settings: model, dtype and reward.

    Args:
        model (`nn.Module`): the causal LM; its name defaults to ``config._name_or_path`` (else its class name).
        reward (`RewardFunction`): the reward; its name defaults to the reward model's ``_name_or_path`` for a
            `SequenceClassifierReward`, else ``reward.name``.
        model_name (`str`, *optional*): the name or path the model was loaded from.
        reward_name (`str`, *optional*): the reward as given (``"vader"``, a reward-model path, ...).

    Returns:
        `dict`: ``{"model", "dtype", "reward"}``, recorded in ``aisp_run.json``.
    """
    if is_vllm_engine(model):  # the same checkpoint and dtype on vLLM gives the same samples: it resumes an HF run
        model_name = model_name or str(model.model_config.model)
        dtype = str(model.model_config.dtype).removeprefix("torch.")
    else:
        config = getattr(model, "config", None) or getattr(getattr(model, "pretrained_model", None), "config", None)
        if model_name is None:
            model_name = getattr(config, "_name_or_path", "") or type(model).__name__
        parameter = next(model.parameters(), None)
        dtype = str(parameter.dtype).removeprefix("torch.") if parameter is not None else "unknown"
    if reward_name is None:
        reward_model = getattr(reward, "model", None) if isinstance(reward, SequenceClassifierReward) else None
        reward_name = getattr(getattr(reward_model, "config", None), "_name_or_path", "") or reward.name
    return {"model": _name_or_path(model_name), "dtype": dtype, "reward": _name_or_path(reward_name)}


_RESUME_FIXES = {"model": "model_name_or_path", "dtype": "dtype", "reward": "reward"}


def _check_resume(path: Path, settings: dict[str, Any]) -> None:
    """Refuses to resume the run in ``path`` (its ``aisp_run.json``) with other settings, model, dtype or reward."""
    if not path.is_file():
        return
    previous = json.loads(path.read_text())
    differences = []
    for key in sorted(set(previous) | set(settings)):
        if key not in previous and key in _RESUME_FIXES:
            logger.warning("%s records no %s (an older version wrote it); it cannot be checked.", path, key)
            continue
        old, new = previous.get(key), settings.get(key)
        if isinstance(old, Mapping) and isinstance(new, Mapping):
            differences += [
                f"{key}.{name} {old.get(name)!r} then, {new.get(name)!r} now"
                for name in sorted(set(old) | set(new))
                if old.get(name) != new.get(name)
            ]
        elif old != new:
            flag = f" (`{_RESUME_FIXES[key]}`)" if key in _RESUME_FIXES else ""
            differences.append(f"{key}{flag} {old!r} then, {new!r} now")
    if differences:
        raise ValueError(
            f"`output_dir` {str(path.parent)!r} holds a run with other settings than this one: "
            f"{'; '.join(differences)}. Resume with the settings of that run, or pass a new `output_dir` "
            "(`generation_dir` in the recipes) to start a fresh one."
        )


GENERATION_METHODS = ("aisp", "bon_top_p", "bon_gaussian")
"""Sample sources of the generation step: AISP and the best-of-N baselines at the same budget."""


def make_generation_sampler(
    method: str, model: nn.Module, tokenizer: Any, reward: RewardFunction, max_new_tokens: int, config: AISPConfig
) -> Any:
    """The sampler of ``method`` with the budget of ``config`` (``N = sample_size * n_iterations`` per prompt)."""
    horizon = LengthSampler(max_new_tokens, max_new_tokens + 1)
    if method == "aisp":
        return AISPSampler.from_config(model, tokenizer, reward, horizon, config)
    if method == "bon_gaussian":
        return GaussianBestOfNSampler.from_config(model, tokenizer, reward, horizon, config)
    if method == "bon_top_p":
        base = None if is_vllm_engine(model) else getattr(generation_model(model), "generation_config", None)
        sampling = copy.deepcopy(base) if base is not None else GenerationConfig()
        sampling.update(do_sample=True, top_p=0.9, top_k=0, temperature=1.0)
        return BestOfNSampler(model, tokenizer, reward, horizon, config.total_samples, config.seed, 1, sampling)
    raise ValueError(f"`method` must be one of {GENERATION_METHODS}, got {method!r}.")


def run_generation(
    model: nn.Module,
    tokenizer: Any,
    reward: RewardFunction | Any,
    prompts: Sequence[Prompt],
    aisp_config: AISPConfig,
    output_dir: str | os.PathLike,
    accelerator: Any | None = None,
    *,
    max_new_tokens: int = 32,
    framing: str = "auto",
    max_prompt_length: int | None = None,
    greedy_batch_size: int | None = None,
    show_progress: bool = True,
    model_name: str | None = None,
    reward_name: str | None = None,
    method: str = "aisp",
    save_means: bool = False,
) -> list[dict[str, Any]]:
    """Runs AISP on every prompt exactly once, sharded over processes and resumable; returns all records.

    Args:
        model (`PreTrainedModel`): the causal LM (on this process's device).
        tokenizer (`PreTrainedTokenizerBase`): its tokenizer, with a pad token.
        reward (`RewardFunction` or `Callable[[list[str]], list[float]]`): the reward, see `aisp_trl.rewards`.
        prompts (`Sequence[str | list[dict]]`): prompt strings or conversations; prompt id = position.
        aisp_config (`AISPConfig`): n, kappa, sigma2, lambda, alpha, prompt_batch_size and seed. A ``None`` seed is
            drawn once and stored, so that a resumed run continues with the same one.
        output_dir (`str` or `os.PathLike`): where ``shards/records-{rank:05d}.jsonl``, ``aisp_run.json`` (settings)
            and the merged ``records.jsonl`` go.
        accelerator (`Accelerator` or `PartialState`, *optional*): the process group; defaults to
            [`default_state`] (a single process unless launched with ``accelerate launch``).
        max_new_tokens (`int`, defaults to 32): tau, the new tokens of AISP and of the greedy response.
        framing (`str`, defaults to `"auto"`): how prompts are framed, see `aisp_trl.data.render_prompt`.
        max_prompt_length (`int`, *optional*): keep the last ``max_prompt_length`` prompt tokens.
        greedy_batch_size (`int`, *optional*): batch of the greedy decodes; defaults to ``prompt_batch_size``.
        show_progress (`bool`, defaults to True): a tqdm bar on the main process.
        model_name (`str`, *optional*): the name or path the model was loaded from, recorded in ``aisp_run.json``
            and checked on resume (with the model's dtype); defaults to ``model.config._name_or_path``.
        reward_name (`str`, *optional*): the reward as given (e.g. ``"vader"`` or a reward-model path), recorded and
            checked on resume; defaults to the reward model's path or the reward's ``name``.
        method (`str`, defaults to ``"aisp"``): where the samples come from, one of `GENERATION_METHODS`: AISP, or a
            best-of-N baseline at the same budget ``N = n * kappa`` (``"bon_top_p"``: trl's top-p sampling, p = 0.9,
            T = 1; ``"bon_gaussian"``: BoN (N), zero-mean pre-logit noise with ``sigma2``), so that datasets built
            from each differ only in their source. Recorded and checked on resume.
        save_means (`bool`, defaults to False): also store each prompt's final mean ``U`` and the perturbation ``V``
            of its best response (`(tau, d)` each) in ``shards/means-{rank:05d}.safetensors`` under the keys
            ``"{prompt_id}.mean"`` and ``"{prompt_id}.best"`` (read them with `load_means`). Written before the
            prompt's record, so every record on disk has its means; resuming with ``save_means=True`` a run whose
            records lack them raises. AISP only (the best-of-N baselines have no mean).

    Returns:
        `list[dict]`: one record per prompt, sorted by ``prompt_id``: ``AISPResult.to_dict()`` (``prompt`` is the
        text the reward saw, ``samples``, ``best``, curves, ESS) plus ``prompt_id``, ``prompt_input`` (the prompt as
        given), ``query`` (the framed text the model saw) and ``greedy`` (``completion``, ``completion_ids``,
        ``reward`` of the base model's greedy response) and ``seconds`` (the prompt's share of its batch's search
        time). The same list on every process, read from the shards.

    Raises:
        ValueError: If ``output_dir`` holds a run with other settings, another model, dtype or reward, or records of
            other prompts.
    """
    state = accelerator if accelerator is not None else default_state()
    output_dir = Path(output_dir)
    reward = as_reward_function(reward)
    if not prompts:
        raise ValueError("`prompts` is empty; pass at least one prompt.")
    queries, query_ids = tokenize_prompts(tokenizer, prompts, framing, max_prompt_length)
    reward_prompts = [prompt_text(p) for p in prompts]

    # The seed: the stored one when resuming, else the given one, else one drawn on the main process.
    run_file = output_dir / RUN_FILE
    seed = [aisp_config.seed]
    if seed[0] is None:
        stored = json.loads(run_file.read_text())["aisp"]["seed"] if run_file.is_file() else None
        seed = [stored if stored is not None else secrets.randbits(63)]
        broadcast_object_list(seed)
    config = AISPConfig(**{**asdict(aisp_config), "seed": seed[0]})
    identity = run_identity(model, reward, model_name, reward_name)
    if method not in GENERATION_METHODS:
        raise ValueError(f"`method` must be one of {GENERATION_METHODS}, got {method!r}.")
    if save_means and method != "aisp":
        raise ValueError(
            f"`save_means=True` stores AISP's means, but `method` is {method!r}, which has none; use method='aisp' "
            "or save_means=False."
        )
    settings = _run_settings(config, max_new_tokens, framing, max_prompt_length, identity)
    if method != "aisp":  # runs of earlier versions (AISP only) keep resuming without this key
        settings["method"] = method
    _check_resume(run_file, settings)

    # Resume: repair our own shard, then (after everyone has) read every shard; skip the prompt ids on disk.
    own_shard = shard_path(output_dir, state.process_index)
    own_shard.parent.mkdir(parents=True, exist_ok=True)
    _repair_shard(own_shard)
    state.wait_for_everyone()
    done = {r["prompt_id"]: r for r in load_records(output_dir) if r["prompt_id"] < len(prompts)}
    for prompt_id, record in done.items():
        if record["query"] != queries[prompt_id]:
            raise ValueError(
                f"`output_dir` {str(output_dir)!r} holds a record for prompt {prompt_id} with another prompt "
                f"({record['query']!r:.60}) than now ({queries[prompt_id]!r:.60}); keep the prompt list (and order) "
                "of the interrupted run, or use a fresh `output_dir`."
            )
    if save_means and done:
        stored = load_means(output_dir)
        lacking = sorted(i for i in done if "mean" not in stored.get(i, {}) or "best" not in stored.get(i, {}))
        if lacking:
            raise ValueError(
                f"`output_dir` {str(output_dir)!r} holds records of prompts {lacking[:10]} without stored means (the "
                "run was started with save_means=False); use a fresh `output_dir` to store the means of every prompt."
            )
    state.wait_for_everyone()
    if state.is_main_process:
        run_file.write_text(json.dumps(settings, indent=2))
    pending = [i for i in range(len(prompts)) if i not in done]

    sampler = make_generation_sampler(method, model, tokenizer, reward, max_new_tokens, config)
    batch_size = config.prompt_batch_size
    with state.split_between_processes(pending) as mine:
        # Batched AISP: sort by token length (paper 5.3), then fixed batches, flushed to the shard one by one.
        order = sorted(mine, key=lambda i: (len(query_ids[i]), i))
        batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
        progress = tqdm(
            total=len(order),
            desc=f"AISP ({len(done)} done before)" if done else "AISP",
            unit="prompt",
            disable=not (show_progress and state.is_main_process),
        )
        with progress, own_shard.open("a") as shard:
            for batch in batches:
                start = time.perf_counter()
                results = sampler.search([query_ids[i] for i in batch], prompts=[reward_prompts[i] for i in batch])
                seconds = (time.perf_counter() - start) / len(batch)  # the batch's search time, shared equally
                greedy = greedy_records(
                    model,
                    tokenizer,
                    reward,
                    [query_ids[i] for i in batch],
                    [reward_prompts[i] for i in batch],
                    max_new_tokens,
                    greedy_batch_size or batch_size,
                )
                if save_means:  # before the records: a record on disk always has its means
                    _append_means(
                        means_path(output_dir, state.process_index),
                        {
                            f"{prompt_id}.{name}": tensor
                            for prompt_id, result in zip(batch, results, strict=True)
                            for name, tensor in (("mean", result.final_mean), ("best", result.best_perturbation))
                        },
                    )
                for prompt_id, result, base in zip(batch, results, greedy, strict=True):
                    record = {
                        "prompt_id": prompt_id,
                        "prompt_input": prompts[prompt_id],
                        "query": queries[prompt_id],
                        **result.to_dict(),
                        "greedy": base,
                        "seconds": seconds,
                    }
                    shard.write(json.dumps(record) + "\n")
                shard.flush()
                os.fsync(shard.fileno())
                progress.update(len(batch))

    # Every shard is flushed and fsynced: after the barrier each process reads them all back from disk, instead of
    # shipping every sample of every record between processes.
    state.wait_for_everyone()
    merged = {r["prompt_id"]: r for r in load_records(output_dir) if r["prompt_id"] < len(prompts)}
    missing = sorted(set(range(len(prompts))) - set(merged))
    if missing:
        raise RuntimeError(
            f"prompts {missing[:10]} have no record in {str(output_dir / SHARD_DIR)!r} after generation; rerun to "
            "resume (with several processes, `output_dir` must be on a file system every process sees)."
        )
    records = [merged[i] for i in range(len(prompts))]
    if state.is_main_process:
        with (output_dir / RECORDS_FILE).open("w") as f:
            f.writelines(json.dumps(r) + "\n" for r in records)
    state.wait_for_everyone()
    return records


# -- the shared first half of the fine-tuning recipes ------------------------------------------------------------
@dataclass
class AISPRun:
    """A model, its reward and prompts after the AISP generation step: what `recipes/` train and evaluate on."""

    args: AISPGenerationArguments
    state: PartialState
    model_name: str
    model: nn.Module
    tokenizer: Any
    reward: RewardFunction
    train_prompts: list[Prompt]
    eval_prompts: list[Prompt]
    generation_dir: Path
    records: list[dict[str, Any]]

    def evaluate(self, model: nn.Module) -> dict[str, Any]:
        """Greedy rewards of ``model`` on the held-out prompts (see `evaluate_greedy`)."""
        return evaluate_greedy(
            model,
            self.tokenizer,
            self.reward,
            self.eval_prompts,
            self.args.max_new_tokens,
            framing=self.args.framing,
            max_prompt_length=self.args.max_prompt_length,
            batch_size=self.args.eval_batch_size,
            accelerator=self.state,
        )

    def save(self, dataset: Any, name: str, kind: str, counts: Mapping[str, int]) -> None:
        """Saves ``dataset`` under the generation folder with its card (main process only)."""
        if self.state.is_main_process:
            info = {"model": self.model_name, "reward": self.args.reward, "hyper_parameters": self.args.run_info()}
            save_dataset(
                dataset,
                self.generation_dir / name,
                kind=kind,
                info=info | {"counts": dict(counts)},
                push_to_hub=self.args.push_dataset_to_hub,
            )


def generate_for_training(
    args: AISPGenerationArguments, model_name_or_path: str | None, dtype: str | None, output_dir: str | os.PathLike
) -> AISPRun:
    """Loads the model and reward, splits the prompts and runs (or resumes) AISP over the training prompts.

    Args:
        args (`AISPGenerationArguments`): the recipe's generation arguments.
        model_name_or_path (`str`, *optional*): the causal LM (default: the embedded SmolLM2).
        dtype (`str`, *optional*): its dtype (default: float32).
        output_dir (`str` or `os.PathLike`): the trainer's output folder; generation goes to `args.output_path`.
    """
    state = PartialState()
    model_name = model_name_or_path or EMBEDDED_MODEL
    train_prompts, eval_prompts = args.load_prompts()  # bad prompt sources fail before any model is loaded
    if args.use_vllm:
        from .vllm import load_tokenizer

        model, tokenizer = load_vllm_engine(args, model_name, dtype, state), load_tokenizer(model_name)
    else:
        model, tokenizer = load_model_and_tokenizer(model_name, dtype=dtype or "float32", device=str(state.device))
    reward = build_reward(args.reward, device=state.device, max_length=args.reward_max_length)
    generation_dir = args.output_path(output_dir)
    records = run_generation(
        model,
        tokenizer,
        reward,
        train_prompts,
        args.aisp_config(),
        generation_dir,
        accelerator=state,
        max_new_tokens=args.max_new_tokens,
        framing=args.framing,
        max_prompt_length=args.max_prompt_length,
        model_name=model_name,
        reward_name=args.reward,
        method=args.generation_method,
        save_means=args.save_means,
    )
    if args.use_vllm:  # free the engine (its process and memory) before the HF model for training loads
        free_llm(model)
        del model
        model, tokenizer = load_model_and_tokenizer(model_name, dtype=dtype or "float32", device=str(state.device))
    return AISPRun(
        args, state, model_name, model, tokenizer, reward, train_prompts, eval_prompts, generation_dir, records
    )


def load_vllm_engine(
    args: AISPGenerationArguments, model_name: str, dtype: str | None = None, state: Any | None = None
) -> Any:
    """This process's ``vllm.LLM`` for ``use_vllm``: one engine per ``accelerate launch`` process (data parallelism).

    Each process decodes its own shard of the prompts (as on the HF path) on its own engine. Process ``i`` of a
    machine gets GPUs ``i*k .. i*k+k-1`` of the visible ones (``k = vllm_tensor_parallel_size``), or on vLLM's CPU
    backend the ``i``-th slice of the cores and ``1/P`` of its default memory share
    (`aisp_trl.vllm.data_parallel_placement`; a ``VLLM_CPU_OMP_THREADS_BIND`` the user set is kept). The environment
    goes back to what it was once the engine has started.
    """
    from .vllm import CPU_MEMORY_SHARE, data_parallel_placement, engine_environment, load_llm, visible_gpus

    state = state if state is not None else default_state()
    engine = {**args.vllm_engine_kwargs(), **({"dtype": dtype} if dtype else {})}  # else float32 on CPU
    local = int(os.environ.get("LOCAL_WORLD_SIZE", state.num_processes))
    overrides: dict[str, str] = {}
    if local > 1:
        gpus = visible_gpus()
        overrides = data_parallel_placement(state.local_process_index, local, args.vllm_tensor_parallel_size, gpus=gpus)
        if not gpus:
            engine.setdefault("gpu_memory_utilization", CPU_MEMORY_SHARE / local)
            if "VLLM_CPU_OMP_THREADS_BIND" in os.environ:
                overrides.pop("VLLM_CPU_OMP_THREADS_BIND")
    with engine_environment(overrides):
        return load_llm(model_name, **engine)


def free_llm(llm: Any) -> None:
    """Shuts a ``vllm.LLM``'s engine down (its process, its GPU memory) so that training can use the device."""
    import gc

    core = getattr(getattr(llm, "llm_engine", None), "engine_core", None)
    if callable(getattr(core, "shutdown", None)):
        core.shutdown()
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def finished_training(output_dir: str | os.PathLike, overwrite: bool = False, state: Any | None = None):
    """The report of a training already finished in ``output_dir``, unless ``overwrite``; says what it does.

    A recipe calls this first: a rerun of a finished command then skips generation and training (trl's trainers
    would silently overwrite the saved model) and returns the stored report. A training counts as finished when
    ``output_dir`` holds the marker `mark_training_finished` writes (``aisp_training.json``), or a ``report.json``
    next to a saved model or adapter (runs of older versions).

    Args:
        output_dir (`str` or `os.PathLike`): the trainer's ``output_dir``.
        overwrite (`bool`, defaults to False): ``--overwrite_output_dir``: train again (the model is overwritten).
        state (`PartialState`, *optional*): only its main process prints.

    Returns:
        `dict` or `None`: the stored report (``report.json``), or `None` when the recipe should train.
    """
    output_dir = Path(output_dir)
    marker, report_file = output_dir / TRAINING_MARKER, output_dir / "report.json"
    saved_model = any((output_dir / name).is_file() for name in ("model.safetensors", "adapter_model.safetensors"))
    if not (marker.is_file() or (report_file.is_file() and saved_model)):
        return None
    main = state is None or state.is_main_process
    if overwrite:
        if main:
            print(f"`output_dir` {str(output_dir)!r} holds a finished training; training again and overwriting it "
                  "(--overwrite_output_dir).")  # fmt: skip
        return None
    report = json.loads(report_file.read_text()) if report_file.is_file() else {}
    if main:
        print(
            f"`output_dir` {str(output_dir)!r} already holds a finished training (model and {report_file.name}); "
            "skipping generation and training. Pass `--overwrite_output_dir true` to train again (the AISP records "
            "are reused), or a new `--output_dir`."
        )
    return report


def mark_training_finished(output_dir: str | os.PathLike, report: Mapping[str, Any]) -> Path:
    """Writes ``aisp_training.json`` (the rewards and counts of ``report``) so that a rerun skips the training."""
    path = Path(output_dir) / TRAINING_MARKER
    summary = {key: report.get(key) for key in ("method", "model", "reward", "rewards", "counts", "training")}
    path.write_text(json.dumps(summary, indent=2, default=str))
    return path


# -- evaluation and reports ------------------------------------------------------------------------------------
def evaluate_greedy(
    model: nn.Module,
    tokenizer: Any,
    reward: RewardFunction | Any,
    prompts: Sequence[Prompt],
    max_new_tokens: int = 32,
    *,
    framing: str = "auto",
    max_prompt_length: int | None = None,
    batch_size: int = 8,
    accelerator: Any | None = None,
) -> dict[str, Any]:
    """Greedy responses of ``model`` on ``prompts`` and their rewards, sharded over processes.

    Returns:
        `dict`: ``mean_reward`` and per prompt (in order) ``rewards`` and ``completions``; the same on every process.
    """
    state = accelerator if accelerator is not None else default_state()
    reward = as_reward_function(reward)
    if not prompts:
        return {"mean_reward": float("nan"), "rewards": [], "completions": []}
    _, query_ids = tokenize_prompts(tokenizer, prompts, framing, max_prompt_length)
    reward_prompts = [prompt_text(p) for p in prompts]
    was_training = model.training
    model.eval()
    rows: list[tuple[int, str, float]] = []
    with state.split_between_processes(list(range(len(prompts)))) as mine:
        if mine:
            scored = greedy_records(
                model,
                tokenizer,
                reward,
                [query_ids[i] for i in mine],
                [reward_prompts[i] for i in mine],
                max_new_tokens,
                batch_size,
            )
            rows = [(i, s["completion"], s["reward"]) for i, s in zip(mine, scored, strict=True)]
    model.train(was_training)
    if state.num_processes > 1:
        rows = gather_object(rows)
    rows = sorted({r[0]: r for r in rows}.values())
    rewards = [r[2] for r in rows]
    return {"mean_reward": sum(rewards) / len(rewards), "rewards": rewards, "completions": [r[1] for r in rows]}


def summarize_records(records: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Mean AISP best reward, mean base greedy reward (and both per prompt) and the mean best-so-far curve."""
    best = [float(r["best"]["reward"]) for r in records]
    greedy = [float(r["greedy"]["reward"]) for r in records if r.get("greedy")]
    curves = [r["best_so_far"] for r in records if r.get("best_so_far")]
    length = min((len(c) for c in curves), default=0)
    return {
        "num_prompts": len(records),
        "aisp_best_reward": sum(best) / len(best) if best else float("nan"),
        "greedy_reward": sum(greedy) / len(greedy) if greedy else float("nan"),
        "aisp_best_rewards": best,
        "greedy_rewards": greedy,
        "best_so_far_curve": [sum(c[k] for c in curves) / len(curves) for k in range(length)],
    }


MIN_RESULT_PROMPTS = 24
"""Held-out prompts below which a report says it is a smoke test: with fewer, a 95% CI of a mean reward is wider than
the differences the recipes are after, and one seed hides how much the result moves with the data."""


def smoke_test_warning(
    num_prompts: int,
    num_seeds: int = 1,
    fix: str = "raise `num_eval_prompts`, and compare seeds with benchmarks/bench_finetune.py",
) -> str | None:
    """The warning line of a report evaluated on ``num_prompts`` held-out prompts and ``num_seeds`` seeds, or `None`.

    Args:
        num_prompts (`int`): held-out prompts behind the report's means.
        num_seeds (`int`, defaults to 1): seeds behind them.
        fix (`str`): what to change, in the caller's terms (the recipes' flag by default).

    Returns:
        `str` when ``num_prompts < MIN_RESULT_PROMPTS``: e.g. ``"8 prompts, one seed: a smoke test, not a result
        ..."``; else `None`.
    """
    if num_prompts >= MIN_RESULT_PROMPTS:
        return None
    seeds = "one seed" if num_seeds == 1 else f"{num_seeds} seeds"
    return (
        f"{num_prompts} prompts, {seeds}: a smoke test, not a result (fewer than {MIN_RESULT_PROMPTS} held-out "
        f"prompts; {fix})."
    )


def report_uncertainty(
    per_prompt: Mapping[str, Sequence[float]],
    pairs: Sequence[tuple[str, str]] = (),
    num_eval_prompts: int | None = None,
    num_seeds: int = 1,
) -> dict[str, Any]:
    """How sure a report's mean rewards are: per mean its prompt count, 95% bootstrap CI and standard deviation.

    Args:
        per_prompt (`Mapping[str, Sequence[float]]`): name -> one reward per prompt (the names of ``rewards``).
        pairs (`Sequence[tuple[str, str]]`): ``(a, b)`` names scored on the same prompts, compared pairwise (mean
            of ``a - b`` with its 95% CI and win / tie / loss rates, `aisp_trl.stats.paired_comparison`).
        num_eval_prompts (`int`, *optional*): held-out prompts evaluated; below `MIN_RESULT_PROMPTS` a ``warning``
            is added (see `smoke_test_warning`).
        num_seeds (`int`, defaults to 1): seeds behind the numbers.

    Returns:
        `dict` with ``uncertainty`` (name -> ``{"prompts", "mean", "ci95", "std"}``), ``paired`` (``"a − b"`` ->
        the comparison; only with ``pairs``) and ``warning`` (only when it applies): merge it into the report.
    """
    from .stats import bootstrap_ci, paired_comparison

    uncertainty = {}
    for name, values in per_prompt.items():
        mean, low, high = bootstrap_ci([float(v) for v in values])
        finite = [float(v) for v in values if math.isfinite(float(v))]
        spread = statistics.stdev(finite) if len(finite) > 1 else float("nan")
        uncertainty[name] = {"prompts": len(finite), "mean": mean, "ci95": [low, high], "std": spread}
    result: dict[str, Any] = {"uncertainty": uncertainty}
    if pairs:
        result["paired"] = {
            f"{a} − {b}": paired_comparison([list(per_prompt[a])], [list(per_prompt[b])]) for a, b in pairs
        }
    warning = smoke_test_warning(num_eval_prompts, num_seeds) if num_eval_prompts is not None else None
    if warning:
        result["warning"] = warning
    return result


def report_rewards_table(report: Mapping[str, Any]) -> str:
    """The report's ``rewards`` (name -> mean reward) and ``counts`` as a short markdown block (what recipes print).

    With the ``uncertainty`` of `report_uncertainty` the table also gives each mean's 95% bootstrap CI, standard
    deviation and prompt count, then the ``paired`` differences; a ``warning`` is the block's first line.
    """
    from .stats import format_paired

    uncertainty = report.get("uncertainty", {})
    lines = ["## Rewards", ""]
    if report.get("warning"):
        lines += [f"> **Warning**: {report['warning']}", ""]
    if uncertainty:
        lines += ["| | mean reward | 95% CI | std | prompts |", "|---|---|---|---|---|"]
        for name, value in report.get("rewards", {}).items():
            u = uncertainty.get(name)
            extra = f"[{u['ci95'][0]:.4f}, {u['ci95'][1]:.4f}] | {u['std']:.4f} | {u['prompts']}" if u else "| |"
            lines.append(f"| {name} | {value:.4f} | {extra} |")
    else:
        lines += ["| | mean reward |", "|---|---|"]
        lines += [f"| {name} | {value:.4f} |" for name, value in report.get("rewards", {}).items()]
    paired = report.get("paired", {})
    if paired:
        lines += ["", "| paired, same prompts | mean difference [95% CI] | wins / ties / losses |", "|---|---|---|"]
        lines += [f"| {name} | {format_paired(p, digits=4)} |" for name, p in paired.items()]
    counts = report.get("counts", {})
    if counts:
        lines += ["", ", ".join(f"{k}: {v}" for k, v in counts.items())]
    return "\n".join(lines)


def write_report(output_dir: str | os.PathLike, report: Mapping[str, Any], title: str = "AISP report") -> Path:
    """Writes ``report.json`` and ``report.md`` (a rewards table and the settings) to ``output_dir``.

    Args:
        report (`Mapping`): ``rewards`` (name -> mean reward) is tabulated, with the ``uncertainty``, ``paired``
            and ``warning`` of `report_uncertainty` when present; other mappings become sections.

    Returns:
        `Path`: the JSON file.
    """
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    json_path = output_dir / "report.json"
    json_path.write_text(json.dumps(report, indent=2, default=str))
    lines = [f"# {title}", ""]
    tabulated = ("rewards", "uncertainty", "paired", "warning")  # in `report_rewards_table`
    scalars = {k: v for k, v in report.items() if k not in tabulated and not isinstance(v, Mapping)}
    sections = {k: v for k, v in report.items() if k not in tabulated and isinstance(v, Mapping)}
    lines += [f"- **{key.replace('_', ' ').capitalize()}**: {value}" for key, value in scalars.items()]
    lines += ["", report_rewards_table(report)]
    for key, value in sections.items():
        lines += ["", f"## {key.replace('_', ' ').capitalize()}", ""]
        lines += [f"- `{k}`: {v}" for k, v in value.items()]
    (output_dir / "report.md").write_text("\n".join(lines) + "\n")
    return json_path
