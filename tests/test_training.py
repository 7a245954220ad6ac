"""`aisp_trl.training` on a tiny in-memory Llama: LoRA SFT and DPO move the adapters, bad datasets fail clearly."""

from __future__ import annotations

import math

import pytest
import torch
from _tiny import make_model, make_tokenizer
from datasets import Dataset

from aisp_trl.evaluation.metrics import token_nll
from aisp_trl.training import lora_config, train_dpo, train_sft

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _common(tmp_path) -> dict:
    return dict(output_dir=str(tmp_path), max_steps=2, per_device_train_batch_size=2, learning_rate=1e-2,
                save_strategy="no", report_to="none", max_length=32, bf16=False, gradient_checkpointing=False,
                use_cpu=True, disable_tqdm=True, seed=0)  # fmt: skip


def test_train_sft_with_lora_moves_every_adapter_tensor(tmp_path):
    from trl import SFTConfig

    data = Dataset.from_dict(
        {"prompt": ["the movie was", "my day was"], "completion": [" great", " fine"], "reward": [1.0, 0.5]}
    )  # extra columns (reward, prompt_id, ...) are dropped before trl sees them
    outcome = train_sft(make_model(), make_tokenizer(), data, SFTConfig(**_common(tmp_path)), lora_config(r=4))
    assert outcome.steps == 2 and math.isfinite(outcome.train_loss) and outcome.seconds > 0
    assert outcome.update_norm > 0 and outcome.changed_tensors == outcome.trainable_tensors > 0
    assert any("lora_B" in name for name, _ in outcome.model.named_parameters())
    assert set(outcome.summary()) == {"train_loss", "steps", "seconds", "update_norm", "changed_tensors",
                                      "trainable_tensors"}  # fmt: skip


def test_train_dpo_with_lora_and_with_a_reference_copy(tmp_path):
    from trl import DPOConfig

    data = Dataset.from_dict(
        {"prompt": ["the movie was", "my day was"], "chosen": [" great", " good"], "rejected": [" bad", " awful"]}
    )
    config = DPOConfig(**_common(tmp_path), beta=0.1)
    lora = train_dpo(make_model(), make_tokenizer(), data, config, lora_config(r=4))
    assert lora.steps == 2 and lora.update_norm > 0 and lora.changed_tensors == lora.trainable_tensors
    # without LoRA every weight trains against a frozen copy of the model (trl cannot rebuild an in-memory model)
    model = make_model()
    before = model.lm_head.weight.detach().clone()
    full = train_dpo(model, make_tokenizer(), data, DPOConfig(**{**_common(tmp_path), "max_steps": 1}))
    assert full.steps == 1 and not torch.equal(full.model.lm_head.weight.detach(), before)


def test_bad_datasets_and_lora_settings_fail_with_the_fix(tmp_path):
    from trl import DPOConfig, SFTConfig

    with pytest.raises(ValueError, match=r"lacks the columns \['completion'\].*build_sft_dataset"):
        train_sft(make_model(), make_tokenizer(), Dataset.from_dict({"prompt": ["a"]}), SFTConfig(**_common(tmp_path)))
    empty = Dataset.from_dict({"prompt": [], "chosen": [], "rejected": []})
    with pytest.raises(ValueError, match="preference dataset is empty"):
        train_dpo(make_model(), make_tokenizer(), empty, DPOConfig(**_common(tmp_path)))
    with pytest.raises(ValueError, match="`lora_r` must be an integer >= 1, got 0"):
        lora_config(r=0)
    with pytest.raises(ValueError, match="`lora_dropout`"):
        lora_config(dropout=1.0)


def test_token_nll_matches_a_hand_computed_mean():
    model = make_model()
    query, completion = [2, 3, 4], [5, 6]
    logits = model(input_ids=torch.tensor([query + completion])).logits[0]
    logp = torch.log_softmax(logits.float(), dim=-1)
    expected = -(logp[2, 5] + logp[3, 6]).item() / 2  # position t predicts token t + 1
    assert token_nll(model, query, completion) == pytest.approx(expected, rel=1e-5)
    assert math.isnan(token_nll(model, query, []))
