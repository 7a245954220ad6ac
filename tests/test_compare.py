"""`aisp_trl.pipeline.compare` and `recipes/compare.py`: methods at equal budget, report files; tiny models only."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from _tiny import letter_reward, load_script, make_model, make_tokenizer
from scripts.tiny_checkpoints import save_tiny_lm, save_tiny_reward_model

from aisp_trl import AISPConfig
from aisp_trl.pipeline.compare import DEFAULT_METHODS as METHODS
from aisp_trl.pipeline.compare import CompareArguments, build_report, run_methods
from aisp_trl.rewards import MeanReward, RelevanceReward, TextReward, VaderSentimentReward
from aisp_trl.rewards import build_reward as build_reward_by_name

ROOT = Path(__file__).resolve().parents[1]
PROMPTS_FILE = ROOT / "tests" / "fixtures" / "prompts.jsonl"


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _recipe():
    return load_script("recipes", "compare")


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    root = tmp_path_factory.mktemp("checkpoints")
    return save_tiny_lm(root / "lm"), save_tiny_reward_model(root / "rm")


def test_recipe_main_end_to_end(checkpoints, tmp_path):
    recipe = _recipe()
    lm, rm = checkpoints
    argv = [
        "--config", str(ROOT / "recipes" / "configs" / "compare_tiny.yaml"), "--model_name_or_path", str(lm),
        "--reward", str(rm), "--prompt_source", str(PROMPTS_FILE), "--output_dir", str(tmp_path),
    ]  # fmt: skip
    script_args, aisp_config = recipe.make_parser().parse_args_and_config(args=argv)
    assert script_args.methods == list(METHODS) and (aisp_config.sample_size, aisp_config.n_iterations) == (2, 2)
    report = recipe.main(script_args, aisp_config)

    saved = json.loads((tmp_path / "results.json").read_text())
    assert set(saved) == {"settings", "methods", "win_rates", "curves"}
    assert list(saved["methods"]) == list(METHODS)
    assert set(saved["win_rates"]) == set(METHODS) - {"aisp"}
    budget = {m: saved["methods"][m]["summary"]["samples_per_prompt"] for m in METHODS}
    assert budget == {"aisp": 4, "bon_top_p": 4, "bon_gaussian": 4, "args": 1, "greedy": 1}
    for method, entry in saved["methods"].items():
        assert len(entry["per_prompt"]) == 3
        for record in entry["per_prompt"]:
            assert {"prompt", "best_reward", "best_text", "best_completion", "seconds", "diversity"} <= set(record)
            assert math.isfinite(record["best_reward"]) and record["seconds"] > 0
        assert {"reward_mean", "reward_std", "diversity", "seconds_per_prompt"} <= set(entry["summary"])
        # one KL estimator for every method: -log P_base(y|x) of its best response, per prompt
        assert all(record["base_nll"] > 0 for record in entry["per_prompt"]), method
    for win in saved["win_rates"].values():
        assert win["n"] == 3 and math.isclose(win["wins"] + win["ties"] + win["losses"], 1.0)
    curves = saved["curves"]
    assert curves["n_samples"] == [2.0, 4.0]
    for key in ("aisp_mean_at_k", "aisp_best_at_k", "aisp_best_so_far", "bon_top_p", "bon_gaussian", "greedy", "args"):
        assert len(curves[key]) == 2, key
    assert curves["aisp_best_so_far"][1] >= curves["aisp_best_so_far"][0]
    # the best of BoN's N = n * kappa samples is the last point of its curve
    bon_best = saved["methods"]["bon_gaussian"]["summary"]["reward_mean"]
    assert math.isclose(curves["bon_gaussian"][-1], bon_best, rel_tol=1e-9, abs_tol=1e-12)
    assert report["settings"]["budget_per_prompt"] == 4

    markdown = (tmp_path / "results.md").read_text()
    assert "base NLL, −log P_base(y\\|x)" in markdown and "not the paper's Eq. 63 KL" in markdown
    for label in ("| AISP |", "| BoN (top-p) |", "| BoN (N) |", "| ARGS-greedy |", "| greedy |", "Fig. 3"):
        assert label in markdown
    assert (tmp_path / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bon_gaussian_budget_is_n_times_kappa():
    model, tokenizer = make_model("llama"), make_tokenizer()
    queries = [tokenizer("the movie was").input_ids, tokenizer("my day").input_ids]
    config = AISPConfig(sample_size=3, n_iterations=2, prompt_batch_size=2, seed=0)
    args = CompareArguments(methods=["aisp", "bon_gaussian"], max_new_tokens=4, show_progress=False)
    runs = run_methods(model, tokenizer, TextReward(letter_reward()), queries, ["a", "b"], config, args)
    assert [len(r.samples) for r in runs["bon_gaussian"].results] == [6, 6]
    assert [len(r.samples) for r in runs["aisp"].results] == [6, 6]
    assert all(r.horizon == 4 for run in runs.values() for r in run.results)
    report = build_report(runs, ["a", "b"], config, args)
    assert len(report["curves"]["bon_gaussian"]) == len(report["curves"]["aisp_best_so_far"]) == 2
    assert all(t > 0 for run in runs.values() for t in run.seconds)


def test_kl_column_is_minus_log_p_base_of_each_methods_answer():
    # the same estimator for every method (a point mass on its best response), recomputed from the model's forward
    from aisp_trl.pipeline.compare import MethodRun, base_nll_per_prompt

    model, tokenizer = make_model("llama"), make_tokenizer()
    queries = [tokenizer("the movie was").input_ids, tokenizer("my day").input_ids]
    config = AISPConfig(sample_size=2, n_iterations=2, sigma2=1.0, seed=0)
    args = CompareArguments(methods=["aisp", "bon_top_p", "greedy"], max_new_tokens=5, show_progress=False)
    runs = run_methods(model, tokenizer, TextReward(letter_reward()), queries, ["a", "b"], config, args)
    for method, run in runs.items():
        values = base_nll_per_prompt(model, run)
        for result, value in zip(run.results, values, strict=True):
            query, response = result.query_ids, result.best.completion_ids
            with torch.no_grad():
                logits = model(torch.tensor([query + response])).logits[0, len(query) - 1 : -1].double()
            expected = -torch.log_softmax(logits, -1)[torch.arange(len(response)), torch.tensor(response)].sum()
            assert value == pytest.approx(float(expected), abs=1e-5), method
    empty = MethodRun("greedy", [runs["greedy"].results[0]], [1.0])
    empty.results[0].samples[0].completion_ids = []
    assert math.isnan(base_nll_per_prompt(model, empty)[0])


class _FakeEmbedder:
    """Unit vectors from character counts of 'a' and 'b': enough to check the cosine and the prompt cache."""

    def __init__(self):
        self.calls: list[list[str]] = []

    def encode(self, texts):
        self.calls.append(list(texts))
        rows = torch.tensor([[t.count("a") + 1e-6, t.count("b")] for t in texts], dtype=torch.float32)
        return torch.nn.functional.normalize(rows, dim=-1)


def test_relevance_reward_and_mix():
    embedder = _FakeEmbedder()
    relevance = RelevanceReward(embedder)
    scores = relevance(["aaa", "aaa", "bbb"], ["a", "b", "b"], ["", "", ""])
    assert torch.allclose(scores, torch.tensor([1.0, 0.0, 1.0], dtype=torch.float64), atol=1e-5)
    relevance(["aaa"], ["ab"], [""])
    assert sorted(embedder.calls[0]) == ["aaa", "bbb"] and embedder.calls[2] == ["ab"]  # prompts embedded once

    mix = build_reward_by_name("vader+relevance", embedder=embedder)
    assert isinstance(mix, MeanReward) and mix.name == "vader+relevance"
    vader = VaderSentimentReward()(["aaa"], ["a wonderful day"], [""])
    mixed = mix(["aaa"], ["a wonderful day"], [""])
    alone = RelevanceReward(_FakeEmbedder())(["aaa"], ["a wonderful day"], [""])
    assert torch.allclose(mixed, (vader + alone) / 2)
    assert isinstance(build_reward_by_name("vader"), VaderSentimentReward)
    with pytest.raises(ValueError, match="empty part"):
        build_reward_by_name("vader+")


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"methods": ["aisp", "bon"]}, "methods"),
        ({"methods": []}, "methods"),
        ({"methods": ["aisp", "aisp"]}, "twice"),
        ({"top_p": 0.0}, "top_p"),
        ({"max_new_tokens": 0}, "max_new_tokens"),
        ({"reward": ""}, "reward"),
        ({"num_threads": 0}, "num_threads"),
    ],
)
def test_compare_arguments_validate(kwargs, match):
    with pytest.raises(ValueError, match=match):
        CompareArguments(**kwargs)
