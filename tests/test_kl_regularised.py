"""The KL-regularised objective (`kl_coef`): s = r - beta * KL, KL = -log P_base(y | x), for AISP and both BoNs."""

from __future__ import annotations

import math

import pytest
import torch
from _tiny import letter_reward
from transformers import GenerationConfig

from aisp_trl import AISPConfig, AISPSampler, BestOfNSampler, GaussianBestOfNSampler, LengthSampler
from aisp_trl.evaluation.metrics import token_nll
from aisp_trl.ops import regularized_scores

F64 = dict(dtype=torch.float64)


def test_regularized_scores_by_hand():
    rewards = torch.tensor([1.0, 2.0, math.nan, math.inf])
    kl = torch.tensor([2.0, 0.5, 1.0, 3.0])
    scores = regularized_scores(rewards, kl, 0.5)  # 1 - 0.5 * 2 = 0, 2 - 0.25 = 1.75; non-finite stays non-finite
    assert scores[:2].tolist() == [0.0, 1.75] and math.isnan(scores[2]) and scores[3] == math.inf
    torch.testing.assert_close(regularized_scores(rewards[:2], kl[:2], 0.0), torch.tensor([1.0, 2.0], **F64))
    torch.testing.assert_close(regularized_scores(rewards[:2], None, 0.5), torch.tensor([1.0, 2.0], **F64))


def _aisp(model, tok, **kw):
    kw = {"sample_size": 4, "n_iterations": 2, "sigma2": 1.0, "lam": 0.05, "seed": 0} | kw
    return AISPSampler(model, tok, kw.pop("reward", letter_reward()), LengthSampler(6, 7), **kw)


def test_kl_coef_zero_reproduces_the_plain_search_exactly(model, tok):
    query = tok("the cat").input_ids
    plain = _aisp(model, tok).search(query)[0]
    zero = _aisp(model, tok, kl_coef=0.0, kl_per_token=True).search(query)[0]
    assert [(s.completion_ids, s.reward) for s in plain.samples] == [(s.completion_ids, s.reward) for s in zero.samples]
    assert all(s.kl is None and s.score is None for s in zero.samples)
    assert "kl" not in zero.to_dict()["best"] and "score" not in zero.to_dict()["samples"][0]
    torch.testing.assert_close(plain.final_mean, zero.final_mean)


@pytest.mark.parametrize("per_token", [False, True])
def test_aisp_weights_and_ranks_by_reward_minus_beta_kl(model, tok, monkeypatch, per_token):
    query = tok("the cat").input_ids
    sampler = _aisp(model, tok, kl_coef=0.5, kl_per_token=per_token)
    seen = []
    update = sampler._update
    monkeypatch.setattr(sampler, "_update", lambda *a: seen.append(a[3].clone()) or update(*a))
    result = sampler.search(query)[0]
    for s in result.samples:
        kl = token_nll(model, query, s.completion_ids) * len(s.completion_ids)  # -log P_base(y|x), summed
        kl = kl / len(s.completion_ids) if per_token else kl
        assert s.kl == pytest.approx(kl, rel=1e-4) and s.score == pytest.approx(s.reward - 0.5 * s.kl, rel=1e-6)
    # the weights saw the scores, iteration by iteration; the answer is the best score, not the best reward
    assert [t.tolist() for t in seen] == [[s.score for s in result.samples if s.iteration == k] for k in (1, 2)]
    assert result.best.score == max(s.score for s in result.samples)
    assert result.best_so_far[-1] == pytest.approx(result.best.score)


def test_a_large_beta_picks_the_answer_closest_to_the_base_model(model, tok):
    query = tok("a dog sat on").input_ids
    for sampler in (
        BestOfNSampler(model, tok, lambda texts: [1.0] * len(texts), LengthSampler(6, 7), 6, 0, kl_coef=10.0),
        GaussianBestOfNSampler(
            model, tok, lambda texts: [1.0] * len(texts), LengthSampler(6, 7), 6, 0, sigma2=2.0, kl_coef=10.0
        ),  # fmt: skip
    ):
        result = sampler.search(query)[0]
        kls = [s.kl for s in result.samples]
        assert len(set(kls)) > 1  # the samples differ, so the choice means something
        assert result.best.kl == min(kls) and result.best.reward == 1.0
        assert sampler.generate(query)[0][0] != "" and result.to_dict()["best"]["kl"] == min(kls)


@pytest.mark.parametrize("arch", ["llama", "gpt2", "gemma2"])
def test_the_nll_read_off_the_decode_equals_a_teacher_forced_pass(tok, arch):
    # HFDecoder records the unperturbed z_t while decoding (before the noise is added) and runs the head over the
    # generated positions once afterwards; it must give what a second, teacher-forced forward gives. Gemma 2
    # soft-caps its logits after the head; GPT-2 has its own cache; rows of different queries and lengths, an
    # EOS before the horizon and a slice limit (max_batch_rows) are all covered.
    from _tiny import EOS_ID, make_model

    from aisp_trl.decoding import HFDecoder

    lm = make_model(arch)
    decoder = HFDecoder(lm, tok.pad_token_id, max_batch_rows=3)
    rows = [tok("the cat").input_ids] * 3 + [tok("a dog sat on").input_ids] * 2
    config = GenerationConfig(do_sample=False, max_new_tokens=6, eos_token_id=EOS_ID, pad_token_id=tok.pad_token_id)
    noise = torch.randn(len(rows), 6, lm.config.hidden_size, generator=torch.Generator().manual_seed(0)) * 3.0
    greedy, nll = decoder.greedy_with_nll(rows, [6, 6, 4, 6, 5], config, noise)
    assert greedy == decoder.greedy(rows, [6, 6, 4, 6, 5], config, noise)  # recording changes nothing decoded
    assert len({tuple(c) for c in greedy}) > 1 and min(map(len, greedy)) < 6  # distinct answers, some cut short
    assert nll == pytest.approx(decoder.response_nll(rows, greedy), rel=1e-5, abs=1e-5)
    sampling = GenerationConfig(do_sample=True, top_p=0.9, temperature=1.5, top_k=0, max_new_tokens=6,
                                eos_token_id=EOS_ID, pad_token_id=tok.pad_token_id)  # fmt: skip
    sampled, nll = decoder.sample_with_nll(rows, [6] * 5, sampling, seed=3)
    assert sampled == decoder.sample(rows, [6] * 5, sampling, seed=3)
    # the base model's NLL (T = 1, untruncated), not the sampling distribution's
    assert nll == pytest.approx(decoder.response_nll(rows, sampled), rel=1e-5, abs=1e-5)
    # a sample's KL field is that NLL: BestOfNSampler with kl_coef reads it off its own decode
    bon = BestOfNSampler(lm, tok, letter_reward(), LengthSampler(6, 7), 4, 0, kl_coef=0.1)
    for s in bon.search(rows[0])[0].samples:
        expected = token_nll(lm, rows[0], s.completion_ids) * len(s.completion_ids)
        assert s.kl == pytest.approx(expected, rel=1e-4, abs=1e-5)


def test_kl_coef_is_validated(model, tok):
    with pytest.raises(ValueError, match="`kl_coef` must be a finite number >= 0"):
        AISPConfig(kl_coef=-1.0)
    with pytest.raises(ValueError, match="`kl_coef`"):
        BestOfNSampler(model, tok, letter_reward(), LengthSampler(4, 5), 2, kl_coef=float("nan"))
    assert AISPConfig(kl_coef=0.0).settings() == AISPConfig().settings()  # runs made before the option still match
    assert AISPConfig(kl_coef=0.2).settings()["kl_coef"] == 0.2


def test_preference_pairs_from_a_regularised_search_are_chosen_and_rejected_by_score():
    from aisp_trl.data import build_preference_dataset, build_sft_dataset

    def sample(text, reward, kl):
        return {"completion": text, "reward": reward, "kl": kl, "score": reward - 0.5 * kl}

    # by reward alone "hack" (1.0) is best and "fine" (0.2) worst; by score (beta 0.5) "good" is best, "hack" worst
    samples = [sample("hack hack hack", 1.0, 3.0), sample("good answer", 0.8, 0.2), sample("fine", 0.2, 0.3)]
    record = {"prompt_id": 0, "prompt": "p", "query": "p", "samples": samples, "best": samples[1]}
    pairs = build_preference_dataset([record], rejected="worst")
    assert pairs["chosen"] == ["good answer"] and pairs["rejected"] == ["hack hack hack"]
    assert pairs["margin"] == [pytest.approx(0.7 - (-0.5))] and pairs["chosen_score"] == [pytest.approx(0.7)]
    assert pairs["rejected_kl"] == [3.0] and pairs["chosen_reward"] == [0.8]
    assert build_sft_dataset([record])["completion"] == ["good answer"]
    plain = [{"completion": s["completion"], "reward": s["reward"]} for s in samples]
    unregularised = build_preference_dataset([{"prompt_id": 0, "prompt": "p", "query": "p", "samples": plain}])
    assert unregularised["chosen"] == ["hack hack hack"] and "chosen_kl" not in unregularised.column_names
