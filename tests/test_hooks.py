"""The pre-logit hook on tiny GPT-2 / Llama / Qwen2 / Gemma2 models and through the wrappers users hand in."""

import os
import socket

import pytest
import torch
from _tiny import ARCHS, ValueHeadWrapper, make_model, make_tokenizer
from peft import LoraConfig, get_peft_model
from torch import nn

from aisp_trl.hooks import capture_prelogits, find_output_layer, generation_model, perturb_prelogits


def _batch(tok, texts):
    enc = tok(texts, return_tensors="pt", padding=True)
    return enc.input_ids, enc.attention_mask


def _greedy(model, ids, mask, steps, **kw):
    return model.generate(input_ids=ids, attention_mask=mask, do_sample=False, max_new_tokens=steps, **kw)


@pytest.mark.parametrize("arch", ARCHS)
def test_zero_noise_reproduces_greedy_generate(arch):
    model, tok = make_model(arch), make_tokenizer()
    ids, mask = _batch(tok, ["the cat sat", "a dog"])  # left padded: lengths differ
    plain = _greedy(model, ids, mask, 10)
    with perturb_prelogits(model, torch.zeros(2, 10, model.config.hidden_size)):
        hooked = _greedy(model, ids, mask, 10)
    assert torch.equal(plain, hooked)


@pytest.mark.parametrize("arch", ARCHS)
def test_known_delta_changes_logits_by_output_layer_in_a_plain_forward(arch):
    model, tok = make_model(arch), make_tokenizer()
    ids, mask = _batch(tok, ["the cat sat", "a dog"])
    delta = torch.randn(2, 1, model.config.hidden_size, generator=torch.Generator().manual_seed(0))
    head = find_output_layer(model)
    with torch.no_grad():
        plain = model(input_ids=ids, attention_mask=mask).logits
        with perturb_prelogits(model, delta):
            hooked = model(input_ids=ids, attention_mask=mask).logits
        expected = delta[:, 0] @ head.weight.T  # W delta (these heads have no bias)
    torch.testing.assert_close(hooked[:, :-1], plain[:, :-1])  # earlier positions untouched
    if arch == "gemma2":  # Gemma2 soft-caps its logits: compare before the cap
        cap = model.config.final_logit_softcapping
        plain, hooked = cap * torch.atanh(plain / cap), cap * torch.atanh(hooked / cap)
    torch.testing.assert_close(hooked[:, -1] - plain[:, -1], expected, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_delta_lands_on_the_right_generated_step_with_kv_cache(arch):
    model, tok = make_model(arch), make_tokenizer()
    ids, mask = _batch(tok, ["the cat sat", "a dog"])
    d = model.config.hidden_size
    head = find_output_layer(model)
    kw = dict(output_logits=True, return_dict_in_generate=True)
    plain = _greedy(model, ids, mask, 3, **kw)
    for step in range(3):
        delta = torch.zeros(2, 3, d)
        delta[:, step] = torch.randn(2, d, generator=torch.Generator().manual_seed(step)) * 0.01
        with perturb_prelogits(model, delta):
            hooked = _greedy(model, ids, mask, 3, **kw)
        for t in range(step):  # steps before the delta see the same logits
            torch.testing.assert_close(hooked.logits[t], plain.logits[t])
        expected = delta[:, step] @ head.weight.T
        torch.testing.assert_close(hooked.logits[step] - plain.logits[step], expected, atol=1e-5, rtol=1e-4)


def test_steps_past_the_horizon_are_untouched():
    model, tok = make_model("llama"), make_tokenizer()
    ids, mask = _batch(tok, ["the cat"])
    kw = dict(output_logits=True, return_dict_in_generate=True)
    plain = _greedy(model, ids, mask, 6, **kw)
    with perturb_prelogits(model, torch.zeros(1, 2, model.config.hidden_size)):
        hooked = _greedy(model, ids, mask, 6, **kw)
    assert torch.equal(plain.sequences, hooked.sequences)


def test_hook_is_removed_after_an_exception_inside_generate():
    model, tok = make_model("llama"), make_tokenizer()
    head = find_output_layer(model)
    ids, mask = _batch(tok, ["the cat"])

    class Boom(Exception):
        pass

    def explode(input_ids, scores):
        raise Boom

    with pytest.raises(Boom), perturb_prelogits(model, torch.zeros(1, 4, model.config.hidden_size)):
        assert len(head._forward_pre_hooks) == 1
        _greedy(model, ids, mask, 4, logits_processor=[explode])
    assert len(head._forward_pre_hooks) == 0


def test_batch_mismatch_is_a_clear_error_and_cleans_up():
    model, tok = make_model("llama"), make_tokenizer()
    ids, mask = _batch(tok, ["the cat", "a dog"])
    with pytest.raises(ValueError, match="batch size and width must match"):
        with perturb_prelogits(model, torch.zeros(3, 4, model.config.hidden_size)):
            _greedy(model, ids, mask, 4)
    assert len(find_output_layer(model)._forward_pre_hooks) == 0


def test_capture_prelogits_records_the_head_input_and_cleans_up():
    model, tok = make_model("qwen2"), make_tokenizer()
    ids, mask = _batch(tok, ["the cat"])
    with torch.no_grad(), capture_prelogits(model) as captured:
        logits = model(input_ids=ids, attention_mask=mask, logits_to_keep=0).logits
    assert len(captured) == 1 and captured[0].shape == (1, ids.shape[1], model.config.hidden_size)
    torch.testing.assert_close(find_output_layer(model)(captured[0]), logits)
    assert len(find_output_layer(model)._forward_pre_hooks) == 0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def ddp_world():
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(_free_port()))
    torch.distributed.init_process_group("gloo", rank=0, world_size=1)
    yield
    torch.distributed.destroy_process_group()


def _wrappers(model):
    lora = get_peft_model(
        make_model("llama"), LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=True)
    )
    return {"peft": lora, "value_head": ValueHeadWrapper(model), "data_parallel": nn.DataParallel(model)}


def test_output_layer_found_through_peft_value_head_and_ddp(ddp_world):
    model = make_model("llama")
    head = find_output_layer(model)
    wrapped = _wrappers(model)
    assert find_output_layer(wrapped["value_head"]) is head
    assert find_output_layer(wrapped["data_parallel"]) is head
    ddp = nn.parallel.DistributedDataParallel(model)
    assert find_output_layer(ddp) is head
    assert generation_model(ddp) is model
    peft_head = find_output_layer(wrapped["peft"])
    assert isinstance(peft_head, nn.Linear) and peft_head.weight.shape == head.weight.shape


@pytest.mark.parametrize("kind", ["peft", "value_head", "data_parallel"])
def test_wrapped_models_generate_like_the_plain_model(kind):
    model, tok = make_model("llama"), make_tokenizer()
    wrapped = _wrappers(model)[kind]  # LoRA starts at B = 0: same function as the plain model
    ids, mask = _batch(tok, ["the cat sat", "a dog"])
    delta = torch.randn(2, 6, model.config.hidden_size, generator=torch.Generator().manual_seed(0))
    with perturb_prelogits(model, delta):
        expected = _greedy(model, ids, mask, 6)
    with perturb_prelogits(wrapped, delta):
        got = _greedy(generation_model(wrapped), ids, mask, 6)
    assert torch.equal(expected, got)


def test_model_without_output_embeddings_is_a_clear_error():
    class NoHead(nn.Module):
        def get_output_embeddings(self):
            return None

    with pytest.raises(ValueError, match="no output embeddings"):
        find_output_layer(NoHead())


# -- one call of the output layer per generated token (issue 8) ---------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"prefill_chunk_size": 4}, "chunked prefill"), ({"prompt_lookup_num_tokens": 3}, "prompt-lookup decoding")],
)
def test_multi_position_generation_is_a_clear_error_not_noise_on_wrong_steps(kwargs, match):
    # a chunked prefill calls the output layer once per prompt chunk; prompt lookup verifies several drafted tokens
    # in one call: counting calls as steps would put v_t on the wrong tokens without a word
    model, tok = make_model("llama"), make_tokenizer()
    ids, mask = _batch(tok, ["the cat sat on the mat and the dog"])  # a long query (many chunks), repeated n-grams
    noise = torch.randn(1, 6, model.config.hidden_size, generator=torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match=match), perturb_prelogits(model, noise):
        _greedy(model, ids, mask, 6, **kwargs)
    assert len(find_output_layer(model)._forward_pre_hooks) == 0
    assert len(model.get_input_embeddings()._forward_pre_hooks) == 0


def test_generate_without_cache_still_counts_one_step_per_call():
    # use_cache=False feeds the whole sequence at every step (several new tokens, one position's logits): not a
    # chunked prefill, and the noise lands on the same steps as with the cache
    model, tok = make_model("gpt2"), make_tokenizer()
    ids, mask = _batch(tok, ["the cat sat", "a dog"])
    noise = torch.randn(2, 5, model.config.hidden_size, generator=torch.Generator().manual_seed(1))
    with perturb_prelogits(model, noise):
        cached = _greedy(model, ids, mask, 5)
    with perturb_prelogits(model, noise):
        uncached = _greedy(model, ids, mask, 5, use_cache=False)
    assert torch.equal(cached, uncached)
    with perturb_prelogits(model, torch.zeros_like(noise)):
        assert not torch.equal(cached, _greedy(model, ids, mask, 5))  # the noise did change the decode
