"""Argument dataclasses of the commands and recipes: one shared base for the model / reward / prompt fields, and
`AISPGenerationArguments`, the recipes' AISP generation step.

Every field has ``metadata={"help": ...}`` (trl's ``TrlParser`` turns them into flags and YAML keys) and every class
validates in ``__post_init__``, naming the bad field, before any model loads; the reward spec is checked there with
`aisp_trl.rewards.check_reward_spec`, so every entry point accepts the same reward names.
"""

from __future__ import annotations

import importlib.util
import logging
import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import torch

from .._validation import check_int
from ..config import SEARCH_SETTINGS, AISPConfig
from ..data import (
    BUILTIN,
    DATASET_FORMATS,
    FRAMINGS,
    GENERAL,
    PREPROCESSINGS,
    REJECTED_CHOICES,
    Prompt,
    load_prompts,
    prompt_text,
    resolve_framing,
)
from ..decoding.vllm import VLLM_INSTALL_HINT
from ..models import EMBEDDED_MODEL
from ..rewards import REWARD_NAMES, check_reward_spec

__all__ = ["AISPGenerationArguments", "GENERATION_METHODS", "ModelArguments", "PromptArguments", "RewardArguments"]

logger = logging.getLogger(__name__)

GENERATION_METHODS = ("aisp", "bon_top_p", "bon_gaussian")
"""Sample sources of the generation step: AISP and the best-of-N baselines at the same budget."""

DTYPES = ("float32", "bfloat16", "float16", "auto")
REWARD_HELP = (
    f"Reward: one of {sorted(REWARD_NAMES)} (see aisp_trl.rewards.REWARD_NAMES), the folder / Hub id of a "
    "sequence-classification reward model, or several joined by '+' and averaged, e.g. 'vader+relevance'."
)


def _next_post_init(obj: Any, cls: type) -> None:
    """Runs the next ``__post_init__`` in ``obj``'s MRO after ``cls`` (the argument bases combine freely)."""
    following = getattr(super(cls, obj), "__post_init__", None)
    if following is not None:
        following()


@dataclass
class ModelArguments:
    """Parameters that choose the causal LM (the recipes take these from trl's ``ModelConfig`` instead)."""

    model_name_or_path: str = field(
        default=EMBEDDED_MODEL,
        metadata={"help": f"Causal LM: '{EMBEDDED_MODEL}' (embedded, offline) or a Hub id / local folder."},
    )
    dtype: str = field(default="float32", metadata={"help": "Model dtype: float32, bfloat16 or float16."})
    device: str | None = field(default=None, metadata={"help": "cpu, cuda, cuda:1, ... (default: cuda if present)."})

    def __post_init__(self) -> None:
        if self.dtype not in DTYPES:
            raise ValueError(f"`dtype` must be float32, bfloat16, float16 or auto, got {self.dtype!r}.")
        _next_post_init(self, ModelArguments)


@dataclass
class RewardArguments:
    """Parameters that choose the reward."""

    reward: str = field(default="vader", metadata={"help": REWARD_HELP})
    reward_max_length: int = field(default=1024, metadata={"help": "Reward-model inputs are truncated to this."})

    def __post_init__(self) -> None:
        check_reward_spec(self.reward)  # a bad name fails here, before the policy model loads
        check_int("reward_max_length", self.reward_max_length, 1)
        _next_post_init(self, RewardArguments)


@dataclass
class PromptArguments:
    """Parameters that choose the prompts, their framing and the horizon."""

    prompt_source: str = field(
        default=BUILTIN,
        metadata={
            "help": "'builtin', 'general' (project-written prompts with a fixed train / held-out split; also "
            "'general:train', 'general:held_out', 'general:tune', 'general:bench'), a .json/.jsonl file, a folder "
            "saved with save_to_disk, or a Hugging Face dataset (e.g. Anthropic/hh-rlhf, stanfordnlp/SHP)."
        },
    )
    prompt_split: str = field(default="train", metadata={"help": "Dataset split to read prompts from."})
    framing: str = field(
        default="auto",
        metadata={
            "help": f"One of {FRAMINGS}: the tokenizer's chat template, the App. C.3 begin/finish words "
            "('user': 'User:'/'Assistant:' for Llama and Gemma, 'human': 'Human:'/'Assistant:' for Vicuna), the raw "
            "text, or auto (chat template if the tokenizer has one, else 'user')."
        },
    )
    max_new_tokens: int = field(default=32, metadata={"help": "tau: new tokens per response, every method."})

    def __post_init__(self) -> None:
        if self.framing not in FRAMINGS:
            raise ValueError(f"`framing` must be one of {FRAMINGS}, got {self.framing!r}.")
        check_int("max_new_tokens", self.max_new_tokens, 1)
        _next_post_init(self, PromptArguments)


_AISP_FIELDS = ("sample_size", "n_iterations", *SEARCH_SETTINGS, "reuse_samples", "kl_coef", "kl_per_token",
                "prompt_batch_size")  # fmt: skip
_AISP_DEFAULTS = {f.name: f.default for f in fields(AISPConfig)}
_AISP_HELP = {f.name: dict(f.metadata) for f in fields(AISPConfig)}


@dataclass
class AISPGenerationArguments(RewardArguments, PromptArguments):
    """Arguments of the AISP generation step of the recipes (prompts, reward, AISP, datasets).

    Field names avoid those of trl's ``SFTConfig`` / ``DPOConfig`` / ``ModelConfig`` so that the three parse
    together with ``TrlParser`` (hence ``generation_dir`` and ``aisp_seed`` rather than ``output_dir`` / ``seed``).
    """

    generation_dir: str | None = field(
        default=None,
        metadata={"help": "Folder of the generation shards, records and datasets; defaults to `<output_dir>/aisp`."},
    )
    prompt_config: str | None = field(default=None, metadata={"help": "Dataset configuration name."})
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
    max_prompt_length: int | None = field(
        default=None, metadata={"help": "Keep at most this many prompt tokens (the last ones), as in App. C.3."}
    )
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
    kl_coef: float = field(default=_AISP_DEFAULTS["kl_coef"], metadata=_AISP_HELP["kl_coef"])
    kl_per_token: bool = field(default=_AISP_DEFAULTS["kl_per_token"], metadata=_AISP_HELP["kl_per_token"])
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
            "N = sample_size * n_iterations: 'bon_top_p' (top-p 0.9, T = 1) or 'bon_gaussian' (BoN (N): i.i.d. "
            "pre-logit noise, sigma2 = 0.5, whatever AISP's sigma2 is)."
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
            "dataset_format": (*DATASET_FORMATS, "auto"),
            "rejected": REJECTED_CHOICES,
            "generation_method": GENERATION_METHODS,
        }
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"`{name}` must be one of {allowed}, got {getattr(self, name)!r}.")
        super().__post_init__()  # the reward, prompt and horizon fields
        for name, low in (("num_eval_prompts", 0), ("eval_batch_size", 1)):
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
