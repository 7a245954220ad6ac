"""DESIGN §6: bad input gets a clear error (argument, value, fix) before any model call. One test per case."""

import math

import pytest
import torch
from _tiny import letter_reward, make_tokenizer
from torch import nn
from transformers import LlamaConfig, LlamaForSequenceClassification

from aisp_trl import (
    AISPConfig,
    AISPSampler,
    BestOfNSampler,
    GreedySampler,
    LengthSampler,
    SequenceClassifierReward,
)


@pytest.fixture
def sampler(model, tok, monkeypatch):
    sampler = AISPSampler(model, tok, letter_reward(), LengthSampler(4, 5), 2, 0, n_iterations=2)
    return sampler


@pytest.fixture
def no_model_calls(sampler, monkeypatch):
    """Fails the test if generation starts: the error must come first."""

    def forbidden(*args, **kwargs):
        raise AssertionError("the model was called before the input was validated")

    monkeypatch.setattr(sampler.generator_model, "generate", forbidden)
    return sampler


@pytest.mark.parametrize("name", ["sample_size", "n_iterations", "n_candidates", "prompt_batch_size"])
@pytest.mark.parametrize("value", [0, -1, 2.5, True])
def test_counts_below_one_or_not_integers(name, value):
    with pytest.raises(ValueError, match=rf"`{name}` must be an integer >= 1, got {value!r}"):
        AISPConfig(**{name: value})


def test_n_candidates_above_budget():
    with pytest.raises(ValueError, match=r"`n_candidates` \(9\) exceeds the 8 samples.*lower `n_candidates`"):
        AISPConfig(sample_size=4, n_iterations=2, n_candidates=9)


def test_best_of_n_candidates_above_sample_size(model, tok):
    with pytest.raises(ValueError, match=r"`n_candidates` \(5\) exceeds `sample_size` \(4\)"):
        BestOfNSampler(model, tok, letter_reward(), LengthSampler(4, 5), sample_size=4, n_candidates=5)


@pytest.mark.parametrize("value", [0.0, -0.5, math.inf, math.nan])
def test_sigma2_not_positive(value):
    with pytest.raises(ValueError, match=r"`sigma2` must be a finite number > 0"):
        AISPConfig(sigma2=value)


@pytest.mark.parametrize("value", [0.0, -1.0, math.nan])
def test_lam_not_positive(value):
    with pytest.raises(ValueError, match=r"`lam` must be .auto. or a finite number > 0"):
        AISPConfig(lam=value)


@pytest.mark.parametrize("value", [0.0, -0.1, 1.5, math.nan])
def test_alpha_outside_unit_interval(value):
    with pytest.raises(ValueError, match=r"`alpha` must lie in \(0, 1\]"):
        AISPConfig(alpha=value)


def test_sampler_validates_hyper_parameters_through_the_config(model, tok):
    with pytest.raises(ValueError, match="`sigma2`"):
        AISPSampler(model, tok, letter_reward(), LengthSampler(4, 5), sigma2=0.0)


@pytest.mark.parametrize("query", [[], [[1, 2], []], torch.tensor([], dtype=torch.long)])
def test_empty_query(no_model_calls, query):
    with pytest.raises(ValueError, match="empty"):
        no_model_calls.generate(query)


@pytest.mark.parametrize("query", ["the cat", {"input_ids": [1, 2]}, 3, [("a", "b")], [1.5, 2.5]])
def test_unsupported_query_type(no_model_calls, query):
    with pytest.raises((TypeError, ValueError), match="tokenized_query"):
        no_model_calls.generate(query)


def test_two_dimensional_tensor_query(no_model_calls):
    with pytest.raises(ValueError, match="must be 1-D"):
        no_model_calls.generate(torch.ones(2, 3, dtype=torch.long))


def test_token_ids_out_of_vocabulary(no_model_calls):
    with pytest.raises(ValueError, match=r"not token ids in \[0, 33\)"):
        no_model_calls.generate([1, 2, 999])


def test_query_longer_than_context(no_model_calls):
    with pytest.raises(ValueError, match="beyond the model's context of 128"):
        no_model_calls.generate([3] * 125)  # 125 + 4 new tokens > 128


def test_tokenizer_without_pad_and_eos_token(model):
    tok = make_tokenizer(pad=False)
    tok.eos_token = None  # without a pad token the samplers pad with eos (a warning); with neither, an error
    for cls in (AISPSampler, BestOfNSampler):
        with pytest.raises(ValueError, match=r"`tokenizer` has neither a pad token nor an eos token.*pad_token"):
            cls(model, tok, letter_reward(), LengthSampler(4, 5))


@pytest.mark.parametrize(
    ("setting", "value"),
    [("prefill_chunk_size", 4), ("prompt_lookup_num_tokens", 3), ("assistant_early_exit", 1), ("dola_layers", "low")],
)
def test_generation_settings_that_change_output_layer_calls_per_token(no_model_calls, setting, value):
    # one call of the output layer per prefill chunk / several drafted positions per call: the pre-logit noise
    # would land on the wrong steps (today's silent behaviour); refused before any model call
    with pytest.raises(ValueError, match=rf"`{setting}={value!r}`.*wrong steps; remove `{setting}`"):
        no_model_calls.generate([3] * 40, **{setting: value})


def test_assistant_model_is_refused(no_model_calls, model):
    with pytest.raises(ValueError, match=r"`assistant_model=.*assisted decoding.*remove `assistant_model`"):
        no_model_calls.generate([3, 4], assistant_model=model)


def test_prefill_chunking_in_the_generation_config_is_refused(model, tok, monkeypatch):
    from transformers import GenerationConfig

    config = GenerationConfig(prefill_chunk_size=4, eos_token_id=1, pad_token_id=0)
    sampler = AISPSampler(model, tok, letter_reward(), LengthSampler(4, 5), 2, 0, generation_config=config)
    monkeypatch.setattr(sampler.generator_model, "generate", lambda *a, **k: pytest.fail("model called"))
    with pytest.raises(ValueError, match="`prefill_chunk_size=4`"):
        sampler.generate([3] * 40)


def test_batch_of_long_prompt_and_long_horizon_beyond_a_learned_position_table(tok):
    # GPT-2 has learned positions: a batch left-padded to its longest prompt and decoded to its longest horizon
    # indexes past the table (IndexError) even when each query alone fits
    from transformers import GPT2Config, GPT2LMHeadModel

    config = GPT2Config(vocab_size=33, n_embd=16, n_layer=1, n_head=2, n_positions=24, eos_token_id=1, pad_token_id=0)
    torch.manual_seed(0)
    gpt2 = GPT2LMHeadModel(config).eval()
    long_prompt, short_prompt = [3] * 20, [4, 5, 6]
    for cls, kw in ((AISPSampler, {"n_iterations": 1}), (GreedySampler, {})):
        horizons = iter([2, 14])  # per query: 20 + 2 <= 24 and 3 + 14 <= 24; in one batch: 20 + 14 > 24
        sampler = cls(gpt2, tok, letter_reward(), lambda h=horizons: next(h), prompt_batch_size=2, **kw)
        with pytest.raises(ValueError, match=r"one prompt batch.*34 positions, beyond the model's context of 24"):
            sampler.generate([long_prompt, short_prompt])
        horizons = iter([2, 14])
        alone = cls(gpt2, tok, letter_reward(), lambda h=horizons: next(h), prompt_batch_size=1, **kw)
        assert len(alone.generate([long_prompt, short_prompt])) == 2  # one query per batch fits


def test_model_without_output_embeddings(tok):
    class Encoder(nn.Module):
        def get_output_embeddings(self):
            return None

        def generate(self, *args, **kwargs):
            raise AssertionError("not reached")

    with pytest.raises(ValueError, match="has no output embeddings"):
        AISPSampler(Encoder(), tok, letter_reward(), LengthSampler(4, 5))


def test_length_sampler_not_callable(model, tok):
    with pytest.raises(TypeError, match="`length_sampler` must be callable"):
        AISPSampler(model, tok, letter_reward(), 16)


def test_length_sampler_returning_non_positive(model, tok, monkeypatch):
    sampler = AISPSampler(model, tok, letter_reward(), lambda: 0, 2, 0)
    monkeypatch.setattr(sampler.generator_model, "generate", lambda *a, **k: pytest.fail("model called"))
    with pytest.raises(ValueError, match=r"`length_sampler\(\)` returned 0"):
        sampler.generate([3, 4])


def test_bad_length_sampler_range():
    with pytest.raises(ValueError, match="1 <= min_value < max_value"):
        LengthSampler(8, 8)


def test_generation_kwargs_that_the_sampler_owns(no_model_calls):
    with pytest.raises(ValueError, match="remove `max_new_tokens=5`"):
        no_model_calls.generate([3, 4], max_new_tokens=5)


def test_reward_returning_wrong_count(model, tok):
    sampler = AISPSampler(model, tok, lambda texts: [0.0], LengthSampler(4, 5), 2, 0)
    with pytest.raises(ValueError, match="returned 1 scores for 2 texts"):
        sampler.generate([3, 4])


@pytest.mark.parametrize("bad", ["high", None, [1.0], True])
def test_reward_returning_non_numbers(model, tok, bad):
    sampler = AISPSampler(model, tok, lambda texts: [bad] * len(texts), LengthSampler(4, 5), 2, 0)
    with pytest.raises(ValueError, match="non-numbers"):
        sampler.generate([3, 4])


def test_reward_returning_a_non_sequence(model, tok):
    sampler = AISPSampler(model, tok, lambda texts: 1.0, LengthSampler(4, 5), 2, 0)
    with pytest.raises(ValueError, match="not a list of numbers"):
        sampler.generate([3, 4])


def test_non_finite_rewards_get_zero_weight_with_a_warning(model, tok):
    def half_nan(texts):
        return [math.nan if i % 2 else 1.0 for i in range(len(texts))]

    sampler = AISPSampler(model, tok, half_nan, LengthSampler(4, 5), 4, 0, n_iterations=2, sigma2=1.0, alpha=1.0)
    with pytest.warns(RuntimeWarning, match="2 non-finite score"):
        result = sampler.search([3, 4])[0]
    assert result.ess == pytest.approx([2.0, 2.0])  # two finite samples per iteration, equal rewards
    assert math.isfinite(result.best.reward) and result.best_so_far == [1.0, 1.0]


def test_all_non_finite_rewards_is_an_error(model, tok):
    sampler = AISPSampler(model, tok, lambda texts: [math.inf] * len(texts), LengthSampler(4, 5), 2, 0)
    with pytest.warns(RuntimeWarning), pytest.raises(ValueError, match="returned no finite score"):
        sampler.generate([3, 4])


def test_reward_model_with_a_mismatched_tokenizer(tok):
    config = LlamaConfig(vocab_size=20, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2, num_labels=1, pad_token_id=0)  # fmt: skip
    rm = LlamaForSequenceClassification(config)
    with pytest.raises(ValueError, match=r"tokenizer has 33 tokens but the model's embedding has 20"):
        SequenceClassifierReward(rm, tok)


def test_reward_model_bad_max_length(tok):
    config = LlamaConfig(vocab_size=33, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2, num_labels=1, pad_token_id=0)  # fmt: skip
    with pytest.raises(ValueError, match="`max_length` and `batch_size` must be >= 1"):
        SequenceClassifierReward(LlamaForSequenceClassification(config), tok, max_length=0)
