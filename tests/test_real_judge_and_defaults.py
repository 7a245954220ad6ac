"""The offline judge and AISP's scale-free defaults on the real embedded SmolLM2-135M-Instruct (slow, run in CI)."""

import numpy as np
import pytest

from aisp_trl import AISPSampler, CompletionReward, LengthSampler, VaderSentimentReward
from aisp_trl.prompts import apply_chat_template
from aisp_trl.rewards import JudgeReward

pytestmark = pytest.mark.slow

# (question, a good answer, a bad answer): the pairs JudgeReward.DEFAULT_TEMPLATE was chosen on
PAIRS = [
    ("How do I boil an egg?", "Put the egg in boiling water for about 8 minutes, then cool it in cold water.",
     "egg egg egg egg banana the the the"),
    ("What is a good way to learn to cook?", "Start with simple recipes, cook often, and learn basic knife skills.",
     "The weather today is sunny with clouds."),
    ("Why is the sky blue?", "Sunlight is scattered by air molecules, and blue light scatters the most.",
     "Cooking is a"),
    ("Give me a tip for sleeping better.", "Keep a regular bedtime and avoid screens for an hour before sleep.",
     "I I I I I I sleep sleep"),
    ("What should I pack for a beach trip?", "Sunscreen, a towel, water, a hat and a good book.",
     "The capital of France is Paris."),
    ("How can I save money on groceries?", "Plan meals, make a list, buy store brands and avoid shopping hungry.",
     "I don't know."),
    ("Describe a good morning routine.", "Wake up at the same time, drink water, stretch, and eat a simple breakfast.",
     "Morning. Morning morning the a a."),
    ("What is photosynthesis?", "It is how plants use sunlight, water and carbon dioxide to make sugar and oxygen.",
     "Photosynthesis is a kind of car engine used in boats."),
]  # fmt: skip


def test_embedded_judge_prefers_good_answers(smollm2):
    model, tok = smollm2
    judge = JudgeReward(model, tok)
    prompts = [q for q, _, _ in PAIRS] * 2
    answers = [g for _, g, _ in PAIRS] + [b for _, _, b in PAIRS]
    scores = judge(prompts, answers, answers).tolist()
    good, bad = scores[: len(PAIRS)], scores[len(PAIRS) :]
    correct = sum(g > b for g, b in zip(good, bad, strict=True))
    print(f"judge ranks {correct}/{len(PAIRS)} pairs correctly; good {np.mean(good):+.2f}, bad {np.mean(bad):+.2f}")
    assert correct >= 6  # 7/8 when the template was chosen: a weak but real signal
    # the shared-prefix cache gives the scores of one-at-a-time forwards
    alone = [judge(prompts[i : i + 1], answers[i : i + 1], answers[i : i + 1]).item() for i in range(4)]
    assert alone == pytest.approx(scores[:4], abs=1e-3)


def test_default_aisp_needs_no_lambda_for_any_reward_scale(smollm2):
    # the defaults (lam="auto", ess_target=0.2) on VADER and on VADER x 1000 - 7: the same samples, ESS on target
    model, tok = smollm2
    vader = VaderSentimentReward()
    prompts = ["Describe the worst meal you ever had.", "Tell me why Mondays are awful."]
    queries = [tok(t, add_special_tokens=False).input_ids for t in apply_chat_template(tok, prompts)]

    def run(reward):
        sampler = AISPSampler(model, tok, reward, LengthSampler(12, 13), sample_size=8, n_iterations=3, seed=1,
                              prompt_batch_size=2)  # fmt: skip
        return sampler.search(queries, prompts=prompts)

    base = run(vader)
    scaled = run(
        CompletionReward(lambda prompts, completions: [1000 * r - 7 for r in vader.score(prompts, completions, [])])
    )
    assert [[s.completion for s in r.samples] for r in base] == [[s.completion for s in r.samples] for r in scaled]
    for r in base:
        for k, (ess, lam) in enumerate(zip(r.ess, r.lam, strict=True)):  # on target, or on the ties at the best
            rewards = [s.reward for s in r.samples[8 * k : 8 * k + 8]]
            if lam < 1e300:
                assert (
                    ess == pytest.approx(0.2 * 8, rel=1e-3)
                    if rewards.count(max(rewards)) <= 0.2 * 8
                    else 0.2 * 8 <= ess <= rewards.count(max(rewards)) + 1e-6
                )
