"""RE-Control and amortized AISP end to end on the embedded SmolLM2-135M-Instruct (slow, still run in CI)."""

from __future__ import annotations

import pytest
import torch
from _tiny import chat_queries

from aisp_trl import AISPSampler, GreedySampler, LengthSampler, VaderSentimentReward
from aisp_trl.controllers import (
    ControllerConfig,
    PrelogitController,
    REControlConfig,
    fit_controller,
    prelogits_along,
)
from aisp_trl.hooks import find_output_layer
from aisp_trl.samplers import AmortizedSampler, REControlSampler, train_re_control

TRAIN = ["Describe the worst meal you ever had.", "Tell me why Mondays are awful."]
TEST = ["Write a complaint about a train that was two hours late.", "Write a one-star review of a noisy hotel."]

pytestmark = pytest.mark.slow  # the `smollm2` fixture skips (off CI) when the embedded model is missing


def test_re_control_and_amortized_aisp_run_end_to_end(smollm2):
    model, tok = smollm2
    reward, horizon = VaderSentimentReward(), LengthSampler(8, 9)
    train, test = chat_queries(tok, TRAIN), chat_queries(tok, TEST)
    greedy = GreedySampler(model, tok, reward, horizon).search(test, prompts=TEST)
    width = find_output_layer(model).weight.shape[1]

    # RE-Control: value data from sampled responses, the value MLP, gradient ascent while decoding
    config = REControlConfig(samples_per_prompt=2, max_new_tokens=8, hidden_size=64, epochs=5, seed=0)
    value, info = train_re_control(model, tok, reward, train, TRAIN, config)
    assert info["num_trajectories"] == 4 and info["losses"][-1] < info["losses"][0] and value.input_dim == width
    steered = REControlSampler(model, tok, reward, horizon, value, n_steps=5, step_size=1.0).search(test, prompts=TEST)
    for result in steered:
        assert len(result.samples) == 1 and 1 <= len(result.best.completion_ids) <= 8
        assert -1.0 <= result.best.reward <= 1.0

    # amortized AISP: targets from an AISP search, a controller fitted on them, one controlled greedy decode
    aisp = AISPSampler(model, tok, reward, horizon, sample_size=4, n_iterations=1, seed=0, prompt_batch_size=2)
    pairs = []
    for query, result in zip(train, aisp.search(train, prompts=TRAIN), strict=True):
        z = prelogits_along(model, query, result.best.completion_ids)
        pairs.append((z, result.best_perturbation[: len(z)]))
    controller, record = fit_controller(pairs, ControllerConfig(hidden_size=32, epochs=5, validation_fraction=0.0))
    assert record["train_losses"][-1] < record["train_losses"][0]
    amortized = AmortizedSampler(model, tok, reward, horizon, controller).search(test, prompts=TEST)
    assert all(len(r.samples) == 1 and r.best.completion_ids for r in amortized)
    # a zero controller is exactly greedy on the real model too
    zero = AmortizedSampler(model, tok, reward, horizon, PrelogitController(width)).search(test, prompts=TEST)
    assert [r.best.completion_ids for r in zero] == [r.best.completion_ids for r in greedy]
    assert not find_output_layer(model)._forward_pre_hooks
    assert torch.isfinite(torch.tensor([r.best.reward for r in amortized + steered])).all()
