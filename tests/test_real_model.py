"""AISP on the real embedded SmolLM2-135M-Instruct with the VADER sentiment reward (slow, still run in CI)."""

import numpy as np
import pytest
import torch
from _tiny import chat_queries

from aisp_trl import AISPSampler, GreedySampler, LengthSampler, VaderSentimentReward
from aisp_trl.hooks import perturb_prelogits
from aisp_trl.prompts import apply_chat_template

# prompts whose greedy answers are negative, so that steering toward positive text has room to move
PROMPTS = [
    "Write a complaint about a train that was two hours late.",
    "Describe the worst meal you ever had.",
    "Write a one-star review of a noisy hotel.",
    "Tell me why Mondays are awful.",
]

pytestmark = pytest.mark.slow  # the `smollm2` fixture skips (off CI) when the embedded model is missing


def test_aisp_raises_the_mean_reward_over_iterations(smollm2):
    model, tok = smollm2
    reward = VaderSentimentReward()
    queries = chat_queries(tok, PROMPTS)
    sampler = AISPSampler(model, tok, reward, LengthSampler(24, 25), sample_size=8, n_iterations=4,
                          sigma2=0.5, lam=0.3, alpha=0.999, seed=0, prompt_batch_size=4)  # fmt: skip
    results = sampler.search(queries, prompts=PROMPTS)
    first = np.mean([r.mean_reward[0] for r in results])
    last = np.mean([r.mean_reward[-1] for r in results])
    print(f"mean reward at k=1: {first:+.3f}, at k=4: {last:+.3f}")
    assert last > first  # AISP moves the whole distribution, not only the best sample (paper, Fig. 3)
    greedy = GreedySampler(model, tok, reward, LengthSampler(24, 25)).search(queries, prompts=PROMPTS)
    assert np.mean([r.best.reward for r in results]) > np.mean([g.best.reward for g in greedy]) + 0.5
    assert all(r.best_so_far == sorted(r.best_so_far) for r in results)


def test_zero_noise_reproduces_greedy_on_the_real_model(smollm2):
    model, tok = smollm2
    enc = tok(apply_chat_template(tok, PROMPTS[:2]), return_tensors="pt", padding=True, add_special_tokens=False)
    kw = dict(input_ids=enc.input_ids, attention_mask=enc.attention_mask, do_sample=False, max_new_tokens=12)
    plain = model.generate(**kw)
    with perturb_prelogits(model, torch.zeros(2, 12, model.config.hidden_size)):
        hooked = model.generate(**kw)
    assert torch.equal(plain, hooked)


def test_seeded_real_runs_reproduce(smollm2):
    model, tok = smollm2
    query = chat_queries(tok, PROMPTS[:1])[0]

    def run():
        sampler = AISPSampler(model, tok, VaderSentimentReward(), LengthSampler(8, 9), 4, seed=3, n_iterations=2)
        return [s.text for s in sampler.search(query)[0].samples]

    assert run() == run()
