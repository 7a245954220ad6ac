"""Training on generated data: the one place that builds trl's `SFTTrainer` and `DPOTrainer`.

`recipes/distill_aisp.py`, `recipes/aisp_dpo.py` and `benchmarks/bench_finetune.py` all train through
[`train_sft`] and [`train_dpo`], so that a model trained on AISP data and one trained on best-of-N data differ only
in their data. Both return a [`TrainingOutcome`] with the loss, the step count, the wall time and how far the
trainable parameters moved (a LoRA adapter starts as the identity: ``update_norm == 0`` means the model did not
change).

Example:
    ```python
    >>> from datasets import Dataset
    >>> from peft import LoraConfig
    >>> from trl import SFTConfig
    >>> from aisp_trl.models import load_model_and_tokenizer
    >>> from aisp_trl.training import train_sft
    >>> model, tokenizer = load_model_and_tokenizer()
    >>> data = Dataset.from_dict({"prompt": ["Describe a rainy day."], "completion": [" A calm, lovely day."]})
    >>> outcome = train_sft(model, tokenizer, data, SFTConfig("sft-out", max_steps=2, use_cpu=True, bf16=False),
    ...                     LoraConfig(r=8, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"))
    >>> outcome.steps, outcome.update_norm > 0
    (2, True)
    ```
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass
from typing import Any

from torch import nn

__all__ = ["TrainingOutcome", "lora_config", "train_dpo", "train_sft"]

SFT_COLUMNS = ("prompt", "completion")
DPO_COLUMNS = ("prompt", "chosen", "rejected")


@dataclass
class TrainingOutcome:
    """What one training run produced.

    Attributes:
        model (`nn.Module`): the trained model (a `PeftModel` when trained with a LoRA config; the reference of DPO
            with LoRA is this model with its adapters switched off).
        trainer (`transformers.Trainer`): the trl trainer (``trainer.save_model(folder)`` saves the model).
        train_loss (`float`): trl's mean training loss.
        steps (`int`): optimizer steps taken.
        seconds (`float`): wall time of ``trainer.train()``.
        update_norm (`float`): L2 norm of the change of all trainable parameters (0 when nothing moved).
        changed_tensors (`int`): how many trainable tensors changed, out of ``trainable_tensors``.
        trainable_tensors (`int`): the number of trainable tensors.
    """

    model: nn.Module
    trainer: Any
    train_loss: float
    steps: int
    seconds: float
    update_norm: float
    changed_tensors: int
    trainable_tensors: int

    def summary(self) -> dict[str, float | int]:
        """The numbers of the outcome, JSON-ready (what reports store under ``training``)."""
        return {
            "train_loss": self.train_loss,
            "steps": self.steps,
            "seconds": self.seconds,
            "update_norm": self.update_norm,
            "changed_tensors": self.changed_tensors,
            "trainable_tensors": self.trainable_tensors,
        }


def lora_config(r: int = 16, alpha: int = 32, dropout: float = 0.0, target_modules: list[str] | None = None) -> Any:
    """A causal-LM `peft.LoraConfig` (the recipes' presets: r 16, alpha 32, the attention projections).

    Raises:
        ValueError: If ``r`` or ``alpha`` is not a positive integer or ``dropout`` is outside [0, 1).
    """
    from peft import LoraConfig

    for name, value in (("r", r), ("alpha", alpha)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"`lora_{name}` must be an integer >= 1, got {value!r}; the presets use r=16, alpha=32.")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"`lora_dropout` must lie in [0, 1), got {dropout!r}.")
    modules = target_modules or ["q_proj", "k_proj", "v_proj", "o_proj"]
    return LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=modules, task_type="CAUSAL_LM")


def _check_columns(dataset: Any, columns: tuple[str, ...], kind: str) -> Any:
    missing = [c for c in columns if c not in dataset.column_names]
    if missing:
        raise ValueError(
            f"the {kind} dataset lacks the columns {missing} (it has {dataset.column_names}); build it with "
            f"`aisp_trl.data.build_{'sft' if kind == 'SFT' else 'preference'}_dataset`."
        )
    if len(dataset) == 0:
        raise ValueError(f"the {kind} dataset is empty; generate for more prompts (or keep non-positive margins).")
    return dataset.select_columns(list(columns))


def _train(trainer: Any) -> TrainingOutcome:
    """Runs ``trainer.train()`` and measures how far the trainable parameters moved."""
    trainable = {n: p.detach().clone() for n, p in trainer.model.named_parameters() if p.requires_grad}
    start = time.perf_counter()
    result = trainer.train()
    seconds = time.perf_counter() - start
    squared, changed = 0.0, 0
    for name, parameter in trainer.model.named_parameters():
        if name in trainable:
            delta = (parameter.detach().float().cpu() - trainable[name].float().cpu()).pow(2).sum().item()
            squared += delta
            changed += int(delta > 0)
    return TrainingOutcome(
        model=trainer.model,
        trainer=trainer,
        train_loss=float(result.training_loss),
        steps=int(result.global_step),
        seconds=seconds,
        update_norm=math.sqrt(squared),
        changed_tensors=changed,
        trainable_tensors=len(trainable),
    )


def train_sft(model: nn.Module, tokenizer: Any, dataset: Any, args: Any, peft_config: Any | None = None):
    """Supervised fine-tuning on ``{"prompt", "completion"}`` rows with trl's `SFTTrainer`.

    Args:
        model (`PreTrainedModel`): the causal LM; with ``peft_config`` LoRA layers are injected into it in place.
        tokenizer (`PreTrainedTokenizerBase`): its tokenizer (trl's ``processing_class``).
        dataset (`datasets.Dataset`): e.g. `aisp_trl.data.build_sft_dataset`; only ``prompt`` and ``completion``
            are used (the loss is on the completion).
        args (`trl.SFTConfig`): the training arguments (on CPU: ``bf16=False``, ``gradient_checkpointing=False``).
        peft_config (`peft.LoraConfig`, *optional*): train LoRA adapters instead of all weights.

    Returns:
        [`TrainingOutcome`].
    """
    from trl import SFTTrainer

    data = _check_columns(dataset, SFT_COLUMNS, "SFT")
    trainer = SFTTrainer(
        model=model, args=args, train_dataset=data, processing_class=tokenizer, peft_config=peft_config
    )
    return _train(trainer)


def train_dpo(model: nn.Module, tokenizer: Any, dataset: Any, args: Any, peft_config: Any | None = None):
    """Preference tuning on ``{"prompt", "chosen", "rejected"}`` rows with trl's `DPOTrainer` (any ``loss_type``).

    The reference model is the base model: with ``peft_config`` the policy's adapters are switched off for it (no
    copy); without, a frozen copy of ``model`` (trl would rebuild one from ``config._name_or_path``, which fails for
    a model built in memory).

    Args:
        model (`PreTrainedModel`): the causal LM; with ``peft_config`` LoRA layers are injected into it in place.
        tokenizer (`PreTrainedTokenizerBase`): its tokenizer.
        dataset (`datasets.Dataset`): e.g. `aisp_trl.data.build_preference_dataset`; only ``prompt``, ``chosen``
            and ``rejected`` are used.
        args (`trl.DPOConfig`): the training arguments (``beta``, ``loss_type``, ...).
        peft_config (`peft.LoraConfig`, *optional*): train LoRA adapters instead of all weights.

    Returns:
        [`TrainingOutcome`].
    """
    from trl import DPOTrainer

    data = _check_columns(dataset, DPO_COLUMNS, "preference")
    ref_model = None if peft_config is not None else copy.deepcopy(model).eval()
    trainer = DPOTrainer(
        model=model,
        ref_model=ref_model,
        args=args,
        train_dataset=data,
        processing_class=tokenizer,
        peft_config=peft_config,
    )
    return _train(trainer)
