"""AISPSampler / BestOfNSampler on tiny models: the trl API, Algorithm 1's facts, batching, seeding."""

import math
import random

import numpy as np
import pytest
import torch
from _tiny import letter_reward, make_model, make_tokenizer

from aisp_trl import AISPSampler, BestOfNSampler, LengthSampler
from aisp_trl.decoding import HFDecoder
from aisp_trl.proposals import IIDProposal

QUERIES = ["the cat", "a dog sat on", "we"]


def _aisp(model, tok, reward=None, tau=8, **kw):
    kw = {"sample_size": 4, "n_iterations": 3, "sigma2": 1.0, "lam": 0.05, "seed": 0} | kw
    return AISPSampler(model, tok, reward or letter_reward(), LengthSampler(tau, tau + 1), **kw)


def _ids(tok, text):
    return tok(text).input_ids


def test_the_four_query_forms_give_the_same_texts(model, tok):
    a, b = _ids(tok, QUERIES[0]), _ids(tok, QUERIES[1])
    # a fresh sampler per call: each call of one sampler draws fresh noise
    single_list = _aisp(model, tok).generate(a)
    single_tensor = _aisp(model, tok).generate(torch.tensor(a))
    many_tensors = _aisp(model, tok).generate([torch.tensor(a), torch.tensor(b)])
    many_lists = _aisp(model, tok).generate([a, b])
    assert single_list == single_tensor == many_tensors[:1] == many_lists[:1]
    assert many_tensors == many_lists and len(many_lists) == 2


@pytest.mark.parametrize(("sample_size", "n_candidates"), [(4, 2), (10, 3), (6, 4)])
def test_n_candidates_texts_per_query_starting_with_the_query(model, tok, sample_size, n_candidates):
    for cls, extra in ((AISPSampler, {"n_iterations": 2, "sigma2": 1.0}), (BestOfNSampler, {})):
        sampler = cls(model, tok, letter_reward(), LengthSampler(5, 6), sample_size, 0, n_candidates, **extra)
        out = sampler.generate([_ids(tok, q) for q in QUERIES])
        assert [len(texts) for texts in out] == [n_candidates] * len(QUERIES)
        for query, texts in zip(QUERIES, out, strict=True):
            assert all(t.startswith(query) for t in texts)


def test_candidates_are_the_best_scored_texts(model, tok):
    reward = letter_reward("e")
    result = _aisp(model, tok, reward, n_candidates=3).search(_ids(tok, QUERIES[0]))[0]
    texts = _aisp(model, tok, reward, n_candidates=3).generate(_ids(tok, QUERIES[0]))[0]
    scores = sorted((s.reward for s in result.samples), reverse=True)
    assert reward(texts) == scores[:3]
    assert result.best.reward == max(s.reward for s in result.samples) == result.best_so_far[-1]


def test_queries_to_scores_sees_full_texts(model, tok):
    seen = []

    def record(texts):
        seen.extend(texts)
        return [0.0] * len(texts)

    _aisp(model, tok, record, n_iterations=1).generate(_ids(tok, "the cat"))
    assert len(seen) == 4 and all(t.startswith("the cat") for t in seen)


def test_search_records_every_sample_curves_and_ess(model, tok):
    result = _aisp(model, tok, sample_size=5, n_iterations=4).search(_ids(tok, "the cat"))[0]
    assert len(result.samples) == 20
    assert [s.iteration for s in result.samples] == [k for k in range(1, 5) for _ in range(5)]
    for k in range(4):
        rewards = [s.reward for s in result.samples[5 * k : 5 * k + 5]]
        assert result.mean_reward[k] == pytest.approx(np.mean(rewards))
        assert result.best_reward[k] == max(rewards)
    assert result.best_so_far == list(np.maximum.accumulate(result.best_reward))
    assert all(1.0 <= e <= 5.0 for e in result.ess)
    assert result.final_mean.shape == (8, model.config.hidden_size)
    assert all(len(s.completion_ids) <= 8 for s in result.samples)
    record = result.to_dict()
    assert "final_mean" not in record and record["best"]["reward"] == result.best.reward


def test_theorem_3_3_kappa_one_tiny_lambda_is_best_of_gaussian_candidates(model, tok):
    sampler = _aisp(model, tok, sample_size=6, n_iterations=1, lam=1e-9, alpha=0.999, proposal="iid")
    query = _ids(tok, "the cat")
    result = sampler.search(query)[0]
    # the same candidates: re-draw the sampler's noise stream for this query
    noise = IIDProposal().draw(torch.zeros(8, model.config.hidden_size), 1.0, 6, sampler._noise_generator(query))
    rewards = [s.reward for s in result.samples]
    best = rewards.index(max(rewards))  # Algorithm 1 keeps the first of tied best samples
    assert result.best is result.samples[best]
    # U^2 = V of the best candidate (the mean of the V's when several candidates tie for the best reward)
    tied = [i for i, r in enumerate(rewards) if r == max(rewards)]
    torch.testing.assert_close(result.final_mean, noise[tied].mean(0))


def test_vanishing_sigma_gives_the_greedy_response(model, tok):
    query = _ids(tok, "a dog sat on")
    greedy = model.generate(torch.tensor([query]), do_sample=False, max_new_tokens=8)[0, len(query) :].tolist()
    result = _aisp(model, tok, sigma2=1e-12).search(query)[0]
    assert all(s.completion_ids == greedy[: len(s.completion_ids)] for s in result.samples)
    assert len({tuple(s.completion_ids) for s in result.samples}) == 1


def test_adding_a_constant_to_all_rewards_changes_nothing(model, tok):
    base_reward = letter_reward("a")
    query = _ids(tok, "the cat")
    base = _aisp(model, tok, base_reward).search(query)[0]
    shifted = _aisp(model, tok, lambda texts: [r + 100.0 for r in base_reward(texts)]).search(query)[0]
    assert [s.text for s in base.samples] == [s.text for s in shifted.samples]
    torch.testing.assert_close(base.final_mean, shifted.final_mean)


def test_aisp_moves_the_mean_and_changes_samples(model, tok):
    result = _aisp(model, tok, n_iterations=3).search(_ids(tok, "the cat"))[0]
    assert result.final_mean.abs().sum() > 0
    assert len({s.text for s in result.samples}) > 1


def test_seeded_runs_reproduce_and_leave_global_rngs_alone(model, tok):
    torch.manual_seed(123)
    random.seed(123)
    np.random.seed(123)
    states = (torch.get_rng_state(), random.getstate(), np.random.get_state()[1].copy())
    queries = [_ids(tok, q) for q in QUERIES]
    for cls, kw in ((AISPSampler, {"sigma2": 1.0, "n_iterations": 2}), (BestOfNSampler, {})):
        first = cls(model, tok, letter_reward(), LengthSampler(4, 9, seed=1), 4, 7, **kw).search(queries)
        second = cls(model, tok, letter_reward(), LengthSampler(4, 9, seed=1), 4, 7, **kw).search(queries)
        assert [[s.text for s in r.samples] for r in first] == [[s.text for s in r.samples] for r in second]
        other = cls(model, tok, letter_reward(), LengthSampler(4, 9, seed=1), 4, 8, **kw).search(queries)
        assert [[s.text for s in r.samples] for r in first] != [[s.text for s in r.samples] for r in other]
    assert torch.equal(states[0], torch.get_rng_state())
    assert states[1] == random.getstate()
    assert np.array_equal(states[2], np.random.get_state()[1])


def test_batched_aisp_matches_one_prompt_at_a_time(model, tok):
    queries = [_ids(tok, q) for q in ["the cat", "a dog sat on the mat and looked at the birds", "we", "the cat"]]
    alone = _aisp(model, tok, prompt_batch_size=1, tau=6).search(queries)
    batched = _aisp(model, tok, prompt_batch_size=4, tau=6).search(queries)
    for a, b in zip(alone, batched, strict=True):
        assert [s.text for s in a.samples] == [s.text for s in b.samples]
        assert a.best_so_far == pytest.approx(b.best_so_far)
        torch.testing.assert_close(a.final_mean, b.final_mean, atol=1e-5, rtol=1e-5)
    # a prompt's stream comes from its tokens and its earlier draws, not its slot: a duplicate is a fresh draw
    assert [s.text for s in batched[0].samples] != [s.text for s in batched[3].samples]


def test_batched_prompts_keep_their_own_horizons(model, tok):
    queries = [_ids(tok, q) for q in QUERIES]
    horizons = iter([3, 9, 5])
    sampler = AISPSampler(model, tok, letter_reward(), lambda: next(horizons), 4, 0, n_iterations=2,
                          sigma2=1.0, prompt_batch_size=3)  # fmt: skip
    results = sampler.search(queries)
    assert [r.horizon for r in results] == [3, 9, 5]
    for r in results:
        assert r.final_mean.shape[0] == r.horizon
        assert all(len(s.completion_ids) <= r.horizon for s in r.samples)


def test_length_sampler_is_drawn_once_per_query(model, tok):
    calls = []

    def length_sampler():
        calls.append(1)
        return 4

    AISPSampler(model, tok, letter_reward(), length_sampler, 2, 0, n_iterations=3).generate(
        [_ids(tok, q) for q in QUERIES]
    )
    assert len(calls) == len(QUERIES)


def test_best_of_n_samples_differ_and_pick_the_best(model, tok):
    sampler = BestOfNSampler(model, tok, letter_reward(), LengthSampler(8, 9), sample_size=8, seed=0)
    result = sampler.search(_ids(tok, "the cat"))[0]
    assert len({s.text for s in result.samples}) > 1
    assert result.best.reward == max(s.reward for s in result.samples)


def test_length_sampler_range_and_seed():
    a = [LengthSampler(3, 6, seed=0)() for _ in range(50)]
    sampler = LengthSampler(3, 6, seed=0)
    b = [sampler() for _ in range(50)]
    assert set(b) == {3, 4, 5} and len(set(a)) == 1


def test_samplers_run_through_a_value_head_wrapper(model, tok):
    from _tiny import ValueHeadWrapper

    query = _ids(tok, "the cat")
    wrapped = ValueHeadWrapper(model)
    for cls, kw in ((AISPSampler, {"sigma2": 1.0, "n_iterations": 2}), (BestOfNSampler, {})):
        plain = cls(model, tok, letter_reward(), LengthSampler(6, 7), 4, 0, **kw).generate(query)
        through = cls(wrapped, tok, letter_reward(), LengthSampler(6, 7), 4, 0, **kw).generate(query)
        assert plain == through
    with pytest.raises(ValueError, match="context of 128"):
        AISPSampler(wrapped, tok, letter_reward(), LengthSampler(6, 7)).generate([3] * 125)


def test_generation_kwargs_reach_generate_without_overriding_greedy(model, tok):
    query = _ids(tok, "the cat")
    result = _aisp(model, tok, tau=6, n_iterations=1).search(query, min_new_tokens=6, temperature=5.0)[0]
    assert all(len(s.completion_ids) == 6 for s in result.samples)  # EOS suppressed until the horizon
    bon = BestOfNSampler(model, tok, letter_reward(), LengthSampler(6, 7), 4, 0).search(query, min_new_tokens=6)[0]
    assert all(len(s.completion_ids) == 6 for s in bon.samples)


def test_each_call_draws_fresh_noise_and_same_seed_repeats_the_sequence(model, tok):
    query = _ids(tok, "the cat")
    first, second = _aisp(model, tok), _aisp(model, tok)
    calls_a = [[s.text for s in first.search(query)[0].samples] for _ in range(2)]
    calls_b = [[s.text for s in second.search(query)[0].samples] for _ in range(2)]
    assert calls_a[0] != calls_a[1]  # a second call draws new noise (trl drew from its RNG on every call)
    assert calls_a == calls_b  # two samplers with the same seed give the same sequence of calls
    assert first.sample_size == 4 and first.n_candidates == 1


@pytest.mark.parametrize("proposal", ["iid", "steering", "ar1"])
def test_auto_lambda_is_free_of_the_reward_scale(model, tok, proposal):
    # lam="auto": multiplying every reward by c > 0 and adding a constant gives the same samples and means
    base_reward = letter_reward("x")
    query = _ids(tok, "a dog sat on")
    kw = {"lam": "auto", "alpha": 0.99, "proposal": proposal, "sample_size": 6}
    base = _aisp(model, tok, base_reward, **kw).search(query)[0]
    scaled = _aisp(model, tok, lambda texts: [250.0 * r - 3.0 for r in base_reward(texts)], **kw).search(query)[0]
    assert [s.text for s in base.samples] == [s.text for s in scaled.samples]
    torch.testing.assert_close(base.final_mean, scaled.final_mean)
    finite = [(a, b) for a, b in zip(base.lam, scaled.lam, strict=True) if a != float("inf")]
    assert finite and all(b == pytest.approx(250.0 * a, rel=1e-6) for a, b in finite)
    # the ESS is on target, or on the number of samples tied at the best reward when more of them tie (lam -> 0)
    for k, (ess, lam) in enumerate(zip(base.ess, base.lam, strict=True)):
        rewards = [s.reward for s in base.samples[6 * k : 6 * k + 6]]
        if lam < 1e300:
            assert (
                ess == pytest.approx(0.2 * 6, rel=1e-3)
                if rewards.count(max(rewards)) <= 0.2 * 6
                else 0.2 * 6 <= ess <= rewards.count(max(rewards)) + 1e-6
            )


def test_steering_proposal_adds_one_vector_at_every_step(model, tok):
    from aisp_trl.hooks import perturb_prelogits

    result = _aisp(model, tok, proposal="steering", n_iterations=2).search(_ids(tok, "the cat"))[0]
    # the final mean is reported per step (the vector acts at each of the 8 steps), like best_perturbation
    assert result.final_mean.shape == (8, model.config.hidden_size)
    assert torch.equal(result.final_mean, result.final_mean[:1].expand(8, -1))
    # decoding with the steering vector broadcast over the 8 steps reproduces a sample of iteration 1
    sampler = _aisp(model, tok, proposal="steering", n_iterations=1)
    query = _ids(tok, "the cat")
    v = sampler.proposal.draw(torch.zeros(1, model.config.hidden_size), 1.0, 4, sampler._noise_generator(query))
    with torch.no_grad(), perturb_prelogits(model, sampler.proposal.to_steps(v[:1], 8)):
        out = model.generate(torch.tensor([query]), do_sample=False, max_new_tokens=8)
    assert sampler.search(query)[0].samples[0].completion_ids == out[0, len(query) :].tolist()[:8]


def test_reuse_samples_and_sigma_schedule_run_and_report(model, tok):
    result = _aisp(model, tok, reuse_samples=True, sigma_decay=0.5, lam="auto", n_iterations=3).search(
        _ids(tok, "the cat")
    )[0]
    assert len(result.samples) == 12 and len(result.ess) == len(result.lam) == 3
    # the pooled ESS target is ess_target * n of the k * n samples
    assert all(e <= 12 for e in result.ess)
    # with one iteration, reusing samples is the plain update
    one = _aisp(model, tok, n_iterations=1, alpha=0.9).search(_ids(tok, "we"))[0]
    pooled = _aisp(model, tok, n_iterations=1, alpha=0.9, reuse_samples=True).search(_ids(tok, "we"))[0]
    torch.testing.assert_close(one.final_mean, pooled.final_mean)


def test_max_batch_rows_slices_decoding_without_changing_samples(model, tok):
    from aisp_trl import GaussianBestOfNSampler

    queries = [_ids(tok, q) for q in QUERIES]
    whole = _aisp(model, tok, prompt_batch_size=3).search(queries)
    sliced = _aisp(model, tok, prompt_batch_size=3, max_batch_rows=5).search(queries)
    assert [[s.text for s in r.samples] for r in whole] == [[s.text for s in r.samples] for r in sliced]
    bon = GaussianBestOfNSampler(model, tok, letter_reward(), LengthSampler(6, 7), 12, 0, sigma2=1.0)
    bon_sliced = GaussianBestOfNSampler(
        model, tok, letter_reward(), LengthSampler(6, 7), 12, 0, sigma2=1.0, max_batch_rows=4
    )
    assert [s.text for s in bon.search(queries[0])[0].samples] == [
        s.text for s in bon_sliced.search(queries[0])[0].samples
    ]
    with pytest.raises(ValueError, match="max_batch_rows"):
        _aisp(model, tok, max_batch_rows=0)


# -- trl fidelity (issue 8) ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("make_tau", [np.int64, np.int32, lambda v: torch.tensor(v)])
def test_length_sampler_may_return_numpy_or_tensor_integers(model, tok, make_tau):
    # trl's LengthSampler returned np.random.choice(...), an np.int64
    for cls in (AISPSampler, BestOfNSampler):
        sampler = cls(model, tok, letter_reward(), lambda: make_tau(5), 2, 0)
        result = sampler.search(_ids(tok, "the cat"))[0]
        assert result.horizon == 5 and type(result.horizon) is int


def test_samplers_keep_trls_attributes(model, tok):
    scores, lengths = letter_reward(), LengthSampler(4, 5)
    for cls in (AISPSampler, BestOfNSampler):
        sampler = cls(model, tok, scores, lengths, 3, 0, 2)
        assert sampler.model is model and sampler.tokenizer is tok and sampler.length_sampler is lengths
        assert sampler.queries_to_scores is scores  # the callable as passed, not the adapter around it
        assert (sampler.gen_config is None) == (cls is AISPSampler)  # BoN's default: nucleus sampling
        assert (sampler.sample_size, sampler.n_candidates) == (3, 2)


def test_tokenizer_without_pad_token_pads_with_eos_and_leaves_the_tokenizer_alone(model, tok):
    from _tiny import EOS_ID

    no_pad = make_tokenizer(pad=False)
    query = [_ids(tok, "the cat"), _ids(tok, "a dog sat on")]  # different lengths: left padding happens
    for cls, kw in ((AISPSampler, {"n_iterations": 2, "sigma2": 1.0}), (BestOfNSampler, {})):
        with pytest.warns(UserWarning, match="no pad token; padding with its eos token '<eos>'"):
            sampler = cls(model, no_pad, letter_reward(), LengthSampler(5, 6), 4, 0, **kw)
        assert sampler.pad_token_id == EOS_ID and no_pad.pad_token is None  # the user's tokenizer is untouched
        ids, mask = sampler.decoder.left_pad(query)
        assert ids[0, 0] == EOS_ID and mask[0, 0] == 0
        out = sampler.generate(query)
        assert [len(texts) for texts in out] == [1, 1]
        if cls is AISPSampler:  # padding ids are masked: same texts as with a pad token
            assert out == cls(model, tok, letter_reward(), LengthSampler(5, 6), 4, 0, **kw).generate(query)


def test_top_ranks_every_non_finite_reward_last():
    from aisp_trl.types import AISPResult, Sample

    rewards = [math.inf, 0.5, math.nan, -math.inf, 2.0, 0.5, math.inf]
    samples = [Sample(f"t{i}", f"c{i}", [i], r, 1, i) for i, r in enumerate(rewards)]
    result = AISPResult(prompt="p", query_ids=[1], horizon=1, samples=samples)
    assert [s.index for s in result.top(7)] == [4, 1, 5, 0, 2, 3, 6]  # finite best first, then in order
    assert result.best.reward == 2.0


def test_best_of_n_each_call_draws_fresh_samples_and_same_seed_repeats_the_sequence(model, tok):
    query = _ids(tok, "the cat")

    def bon(seed=0):
        return BestOfNSampler(model, tok, letter_reward(), LengthSampler(8, 9), 4, seed)

    first, second = bon(), bon()
    calls_a = [[s.text for s in first.search(query)[0].samples] for _ in range(3)]
    calls_b = [[s.text for s in second.search(query)[0].samples] for _ in range(3)]
    assert calls_a[0] != calls_a[1] != calls_a[2]  # trl drew from its RNG on every call
    assert calls_a == calls_b  # two samplers with the same seed give the same sequence of calls
    unseeded = bon(seed=None)
    assert [s.text for s in unseeded.search(query)[0].samples] != [s.text for s in unseeded.search(query)[0].samples]
    # batch composition does not change a query's result: alone or next to other queries, same call index
    alone = bon().search(query)[0]
    together = bon().search([_ids(tok, "a dog sat on"), query, _ids(tok, "we")])[1]
    assert [s.text for s in alone.samples] == [s.text for s in together.samples]


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_prompt_prefill_is_computed_once_and_gives_the_same_samples(tok, monkeypatch, arch):
    # rotary (llama) and learned absolute (gpt2) positions: the cached prefill of left-padded prompts must give
    # the positions generate gives them

    model = make_model(arch)
    queries = [_ids(tok, q) for q in QUERIES]
    fed = []
    handle = model.get_input_embeddings().register_forward_hook(lambda m, a, out: fed.append(a[0].numel()))
    try:
        cached = _aisp(model, tok, prompt_batch_size=3, n_iterations=2).search(queries)
        cached_tokens = sum(fed)
        bon_cached = BestOfNSampler(model, tok, letter_reward(), LengthSampler(6, 7), 6, 0).search(queries[1])
        fed.clear()
        monkeypatch.setattr(HFDecoder, "_prompt_cache", lambda self, ids, mask: None)
        plain = _aisp(model, tok, prompt_batch_size=3, n_iterations=2).search(queries)
        plain_tokens = sum(fed)
        bon_plain = BestOfNSampler(model, tok, letter_reward(), LengthSampler(6, 7), 6, 0).search(queries[1])
    finally:
        handle.remove()
    assert [[s.text for s in r.samples] for r in cached] == [[s.text for s in r.samples] for r in plain]
    assert [s.text for s in bon_cached[0].samples] == [s.text for s in bon_plain[0].samples]
    # 3 prompts x 4 rows x 2 iterations: the prompts' prefill (all but the last token) runs once per prompt and
    # decoding call, not once per row
    longest = max(len(q) for q in queries)
    assert plain_tokens - cached_tokens == 2 * 12 * (longest - 1) - 2 * 3 * (longest - 1)


class _FakeDecoder:
    """A `Decoder` without a model: each row's completion is the first perturbation coordinate's sign per step."""

    def __init__(self):
        self.calls = []

    def greedy(self, rows, horizons, config, perturbations=None, **model_kwargs):
        self.calls.append(("greedy", len(rows), perturbations is not None))
        perturbations = perturbations.dense()  # the sampler hands the noise as the recipe that draws it
        return [[3 + int(perturbations[i, t, 0] > 0) for t in range(tau)] for i, tau in enumerate(horizons)]

    def sample(self, rows, horizons, config, seed, **model_kwargs):
        self.calls.append(("sample", len(rows), seed))
        return [[3] * tau for tau in horizons]


def test_algorithm_1_runs_on_any_decoder(model, tok):
    # the search loop only talks to the decoding seam: a fake decoder sees b * n rows per iteration with noise
    sampler = _aisp(model, tok, prompt_batch_size=2, n_iterations=3)
    sampler.decoder = fake = _FakeDecoder()
    results = sampler.search([_ids(tok, q) for q in QUERIES[:2]])
    assert fake.calls == [("greedy", 8, True)] * 3
    assert all(len(r.samples) == 12 and len(r.samples[0].completion_ids) == 8 for r in results)
    bon = BestOfNSampler(model, tok, letter_reward(), LengthSampler(4, 5), 5, 0)
    bon.decoder = fake
    bon.search(_ids(tok, "we"))
    assert fake.calls[-1][:2] == ("sample", 5)


def test_best_of_n_slices_rows_reproducibly(model, tok):
    query = _ids(tok, "the cat")

    def run(rows):
        sampler = BestOfNSampler(model, tok, letter_reward(), LengthSampler(6, 7), 8, 0, max_batch_rows=rows)
        return [s.text for s in sampler.search(query)[0].samples]

    sliced = run(3)
    assert sliced == run(3) and len(sliced) == 8 and len(set(sliced)) > 1  # one forked stream across the slices
    with pytest.raises(ValueError, match="max_batch_rows"):
        run(0)


def _repeats_an_ngram(ids: list[int], n: int) -> bool:
    grams = [tuple(ids[i : i + n]) for i in range(len(ids) - n + 1)]
    return len(grams) != len(set(grams))


def test_generation_kwargs_repetition_guard_acts_after_the_noise(model, tok):
    def completions(**generation_kwargs):
        sampler = _aisp(model, tok, tau=24, proposal="steering", sigma2=4.0)
        return [s.completion_ids for s in sampler.search(_ids(tok, "the cat"), **generation_kwargs)[0].samples]

    unguarded = completions()
    assert any(_repeats_an_ngram(ids, 2) for ids in unguarded)  # the tiny model loops: the guard has work to do
    guarded = completions(no_repeat_ngram_size=2)  # a logits processor: it sees the perturbed logits
    assert len(guarded) == 12 and not any(_repeats_an_ngram(ids, 2) for ids in guarded)


@pytest.mark.parametrize("method", ["aisp", "bon_top_p"])
def test_a_query_repeated_in_one_call_gets_independent_draws(model, tok, method):
    # GRPO-style group sampling sends one prompt k times: each copy is its own draw, exactly the k-th call's
    def sampler():
        if method == "aisp":
            return _aisp(model, tok, n_iterations=1)
        return BestOfNSampler(model, tok, letter_reward(), LengthSampler(8, 9), sample_size=4, seed=0)

    a, b = _ids(tok, QUERIES[0]), _ids(tok, QUERIES[1])
    grouped = sampler().search([a, b, a, a])
    completions = [[s.completion_ids for s in r.samples] for r in grouped]
    assert completions[0] != completions[2] != completions[3] != completions[0]
    one_by_one = sampler()
    sequential = [one_by_one.search([a])[0] for _ in range(3)]
    assert completions[0::2] + completions[3:] == [[s.completion_ids for s in r.samples] for r in sequential]
    assert completions[1] == [s.completion_ids for s in sampler().search([b])[0].samples]  # batch-mates: no effect


def test_each_iteration_draws_its_noise_once(model, tok):
    # the sampler draws V for its update and hands the decoder the same tensor (no second draw on the HF path)
    sampler = _aisp(model, tok, n_iterations=2)
    draws = []
    original = sampler.proposal.draw
    sampler.proposal.draw = lambda *a, **k: draws.append(1) or original(*a, **k)
    result = sampler.search([_ids(tok, QUERIES[0]), _ids(tok, QUERIES[1])])
    assert len(draws) == 2 * 2 and len(result) == 2  # 2 prompts x 2 iterations
    reference = _aisp(model, tok, n_iterations=2).search([_ids(tok, QUERIES[0]), _ids(tok, QUERIES[1])])
    assert [[s.completion_ids for s in r.samples] for r in result] == [
        [s.completion_ids for s in r.samples] for r in reference
    ]


@pytest.mark.parametrize("method", ["aisp", "bon_top_p", "greedy"])
def test_generate_sends_the_inputs_to_the_device_it_is_given(model, tok, monkeypatch, method):
    from aisp_trl import GreedySampler

    seen = []
    pad = HFDecoder.left_pad

    def recording(self, rows, device=None):
        seen.append(device)
        return pad(self, rows)  # decode on the model's CPU; the test checks where the sampler sends the ids

    monkeypatch.setattr(HFDecoder, "left_pad", recording)
    if method == "aisp":
        sampler = _aisp(model, tok, n_iterations=1)
    elif method == "bon_top_p":
        sampler = BestOfNSampler(model, tok, letter_reward(), LengthSampler(4, 5), sample_size=2, seed=0)
    else:
        sampler = GreedySampler(model, tok, letter_reward(), LengthSampler(4, 5))
    sampler.generate(_ids(tok, "the cat"), device="cpu:0")  # an explicit device (index 0), not the default
    assert seen and all(d == torch.device("cpu:0") for d in seen)
    seen.clear()
    sampler.generate(_ids(tok, "the cat"))
    assert seen and all(d == torch.device("cpu") for d in seen)  # default: the LM head's device
