"""Baselines on tiny models: BoN (N) is AISP with one iteration; ARGS-greedy with w = 0 is greedy decoding."""

from __future__ import annotations

import math

import pytest
import torch
from _tiny import ValueHeadWrapper, letter_reward, make_model, make_tokenizer

from aisp_trl import AISPConfig, AISPSampler, LengthSampler
from aisp_trl.samplers import ARGSSampler, GaussianBestOfNSampler, args_greedy_scores


@pytest.fixture(scope="module")
def tok():
    return make_tokenizer()


@pytest.fixture(scope="module")
def llama():
    return make_model("llama")


def _query(tok, text: str = "the cat") -> list[int]:
    return tok(text).input_ids


# ---------------------------------------------------------------------------------------------- BoN (N)


def test_gaussian_bon_is_aisp_with_one_iteration(llama, tok):
    kwargs = dict(sample_size=4, seed=3, sigma2=1.0)
    bon = GaussianBestOfNSampler(llama, tok, letter_reward("e"), LengthSampler(6, 7), **kwargs)
    aisp = AISPSampler(
        llama, tok, letter_reward("e"), LengthSampler(6, 7), n_iterations=1, lam=1e-8, proposal="iid", **kwargs
    )
    queries = [_query(tok), _query(tok, "a dog")]
    bon_results, aisp_results = bon.search(queries), aisp.search(queries)
    for b, a in zip(bon_results, aisp_results, strict=True):
        assert [s.completion_ids for s in b.samples] == [s.completion_ids for s in a.samples]
        assert [s.reward for s in b.samples] == [s.reward for s in a.samples]
        assert b.best == a.best
        assert b.ess == [4.0] and b.final_mean is None
    assert len({tuple(s.completion_ids) for s in bon_results[0].samples}) > 1  # the noise does act


def test_gaussian_bon_generate_and_from_config(llama, tok):
    config = AISPConfig(sample_size=2, n_iterations=3, sigma2=0.3, seed=0, n_candidates=2)
    bon = GaussianBestOfNSampler.from_config(llama, tok, letter_reward("e"), LengthSampler(4, 5), config)
    assert bon.config.sample_size == 6 and bon.config.n_iterations == 1 and bon.config.sigma2 == 0.3
    texts = bon.generate(_query(tok))
    assert len(texts) == 1 and len(texts[0]) == 2 and all(t.startswith("the cat") for t in texts[0])


def test_gaussian_bon_validates_like_aisp(llama, tok):
    with pytest.raises(ValueError, match="`sigma2`"):
        GaussianBestOfNSampler(llama, tok, letter_reward("e"), LengthSampler(4, 5), sigma2=0.0)
    with pytest.raises(ValueError, match="`n_candidates`"):
        GaussianBestOfNSampler(llama, tok, letter_reward("e"), LengthSampler(4, 5), sample_size=2, n_candidates=3)


# ------------------------------------------------------------------------------------------- ARGS-greedy


def test_args_scores_by_hand():
    scores = args_greedy_scores(torch.tensor([1.0, 2.0, 0.5]), torch.tensor([0.5, math.nan, 1.0]), 2.0)
    torch.testing.assert_close(scores, torch.tensor([2.0, -math.inf, 2.5], dtype=torch.float64))


def _greedy(model, query: list[int], horizon: int) -> list[int]:
    out = model.generate(torch.tensor([query]), do_sample=False, max_new_tokens=horizon)
    row = out[0, len(query) :].tolist()
    return row[: row.index(1) + 1] if 1 in row else row  # EOS id 1 kept, as the samplers do


@pytest.mark.parametrize("arch", ["llama", "gemma2"])
def test_args_with_zero_weight_is_greedy(arch, tok):
    model = make_model(arch)
    query = _query(tok)
    result = ARGSSampler(model, tok, letter_reward("e"), LengthSampler(10, 11), weight=0.0).search([query])[0]
    assert result.best.completion_ids == _greedy(model, query, 10)
    assert len(result.samples) == 1 and result.best_so_far == [result.best.reward]


def test_args_through_a_value_head_wrapper(llama, tok):
    query = _query(tok)
    sampler = ARGSSampler(ValueHeadWrapper(llama), tok, letter_reward("e"), LengthSampler(6, 7), weight=0.0)
    assert sampler.search([query])[0].best.completion_ids == _greedy(llama, query, 6)


def test_args_huge_weight_with_full_vocab_writes_the_letter(llama, tok):
    # every extra "e" raises the share of "e" in the text: with all tokens as candidates it always wins
    sampler = ARGSSampler(llama, tok, letter_reward("e"), LengthSampler(6, 7), top_k=len(tok), weight=1e6)
    [[text]] = sampler.generate(_query(tok))
    assert text == "the cat" + "e" * 6


def test_args_huge_weight_picks_the_letter_whenever_it_is_in_the_top_k(llama, tok):
    query, e_id, k = _query(tok), tok.convert_tokens_to_ids("e"), 6
    result = ARGSSampler(llama, tok, letter_reward("e"), LengthSampler(8, 9), top_k=k, weight=1e6).search([query])[0]
    completion = result.best.completion_ids
    for t, token in enumerate(completion):
        with torch.no_grad():
            logits = llama(torch.tensor([query + completion[:t]])).logits[0, -1]
        top = torch.topk(logits, k).indices.tolist()
        assert token in top
        if e_id in top:
            assert token == e_id
    assert result.best.reward == pytest.approx(letter_reward("e")([result.best.text])[0])
    again = ARGSSampler(llama, tok, letter_reward("e"), LengthSampler(8, 9), top_k=k, weight=1e6).search([query])
    assert again[0].best.completion_ids == completion  # deterministic


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(top_k=0), "`top_k`"),
        (dict(weight=math.inf), "`weight`"),
        (dict(n_candidates=2), "`n_candidates`"),
    ],
)
def test_args_rejects_bad_arguments(llama, tok, kwargs, match):
    with pytest.raises(ValueError, match=match):
        ARGSSampler(llama, tok, letter_reward("e"), LengthSampler(4, 5), **kwargs)


def test_args_rejects_generation_kwargs_and_bad_rewards(llama, tok):
    sampler = ARGSSampler(llama, tok, letter_reward("e"), LengthSampler(4, 5), weight=1.0)
    with pytest.raises(ValueError, match="no generation kwargs"):
        sampler.generate(_query(tok), do_sample=True)
    nan_reward = ARGSSampler(llama, tok, lambda texts: [math.nan] * len(texts), LengthSampler(4, 5), top_k=3)
    with pytest.warns(RuntimeWarning), pytest.raises(ValueError, match="no finite score"):
        nan_reward.search([_query(tok)])
