"""`HFDecoder` on tiny models: the shared prefill keeps only the last position's logits."""

import pytest
import torch
from _tiny import EOS_ID, PAD_ID, ValueHeadWrapper, make_model, make_tokenizer
from transformers import GenerationConfig

from aisp_trl.decoding import HFDecoder
from aisp_trl.hooks import find_output_layer

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _wrap(model, kind):
    if kind == "peft":  # LoRA passes `logits_to_keep` on to the base model through its **kwargs
        from peft import LoraConfig, get_peft_model

        return get_peft_model(model, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=True))
    return ValueHeadWrapper(model) if kind == "value_head" else model


@pytest.mark.parametrize(
    ("arch", "wrapper"), [("llama", None), ("gpt2", None), ("llama", "peft"), ("llama", "value_head")]
)
def test_the_shared_prefill_computes_logits_of_the_last_position_only(monkeypatch, arch, wrapper):
    # a full-vocabulary logit at every prompt position costs T * V floats per prompt (0.7 GB in bf16 at 2,600 tokens
    # and a 128k vocabulary) and the prefill throws them away: only its cache is used
    model, tok = _wrap(make_model(arch), wrapper), make_tokenizer()
    queries = [tok("a dog sat on the mat").input_ids, tok("we").input_ids]
    rows = [queries[0]] * 3 + [queries[1]] * 2
    config = GenerationConfig(do_sample=False, max_new_tokens=4, eos_token_id=EOS_ID, pad_token_id=PAD_ID)
    noise = torch.randn(len(rows), 4, find_output_layer(model).in_features, generator=torch.Generator().manual_seed(0))
    decoder = HFDecoder(model, PAD_ID)
    shapes: list[tuple[int, ...]] = []
    handle = find_output_layer(model).register_forward_hook(lambda module, args, out: shapes.append(tuple(out.shape)))
    try:
        shared = decoder.greedy(rows, [4] * len(rows), config, noise)
    finally:
        handle.remove()
    vocab = find_output_layer(model).out_features
    # first call: the prefill of the 2 distinct queries (all but their last token); then one call per generated step
    assert shapes[0] == (2, 1, vocab), f"the prefill computed logits of shape {shapes[0]}, expected (2, 1, {vocab})"
    assert shapes[1:] == [(len(rows), 1, vocab)] * 4
    # the samples are those of decoding every row from scratch (no shared prefill)
    monkeypatch.setattr(HFDecoder, "_prompt_cache", lambda self, ids, mask: None)
    assert decoder.greedy(rows, [4] * len(rows), config, noise) == shared
