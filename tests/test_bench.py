"""The benchmark scripts' core functions on tiny models: finite ratios, fixed decode length, tables and JSON."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import pytest
import torch
from _tiny import letter_reward, make_model, make_tokenizer
from scripts.tiny_checkpoints import save_tiny_lm

from aisp_trl.compare import measure_overhead

ROOT = Path(__file__).resolve().parents[1]
PROMPTS_FILE = ROOT / "tests" / "fixtures" / "prompts.jsonl"


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _script(name: str):
    spec = importlib.util.spec_from_file_location(f"bench_{name}", ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_measure_overhead_returns_finite_ratios():
    model, tokenizer = make_model("llama"), make_tokenizer()
    queries = [tokenizer("the movie was").input_ids, tokenizer("my day").input_ids]
    result = measure_overhead(
        model, tokenizer, letter_reward(), queries, sample_size=2, prompt_batch_size=2, max_new_tokens=5,
        repeats=2, show_progress=False,
    )  # fmt: skip
    assert result["fixed_length"] is True  # every case decoded exactly 5 tokens per row (EOS suppressed)
    assert set(result["ratios"]) == {
        "aisp_iteration / bon_iteration",
        "batched_aisp / bon_equal_budget",
        "hook_zero_noise / plain_generate",
        "aisp_iteration / plain_generate",
    }
    assert all(math.isfinite(v) and v > 0 for v in result["ratios"].values())
    assert all(len(times) == 2 for times in result["seconds"].values())
    with pytest.raises(ValueError, match="prompt_batch_size"):
        measure_overhead(model, tokenizer, letter_reward(), queries[:1], prompt_batch_size=2)


def test_bench_overhead_script(tmp_path):
    lm = save_tiny_lm(tmp_path / "lm")
    script = _script("bench_overhead")
    args = script.make_parser().parse_args(
        ["--model_name_or_path", str(lm), "--prompt_source", str(PROMPTS_FILE), "--framing", "none",
         "--sample_size", "2", "--prompt_batch_size", "2", "--max_new_tokens", "4", "--repeats", "1",
         "--output", str(tmp_path / "overhead.json"), "--no_progress"]
    )  # fmt: skip
    result = script.run(args)
    saved = json.loads((tmp_path / "overhead.json").read_text())
    assert saved["ratios"] == pytest.approx(result["ratios"])
    assert all(math.isfinite(v) for v in saved["ratios"].values())
    assert "| aisp_iteration / bon_iteration |" in script.table(result)


def test_bench_quality_script(tmp_path):
    lm = save_tiny_lm(tmp_path / "lm")
    script = _script("bench_quality")
    args = script.make_parser().parse_args(
        ["--model_name_or_path", str(lm), "--rewards", "vader", "--prompt_source", str(PROMPTS_FILE),
         "--framing", "none", "--num_prompts", "2", "--sample_size", "2", "--n_iterations", "2",
         "--max_new_tokens", "4", "--prompt_batch_size", "2", "--output_dir", str(tmp_path / "out")]
    )  # fmt: skip
    result = script.run(args)
    assert result["checkpoints"] == [2, 4]
    assert [row["method"] for row in result["summary"]] == ["aisp", "bon_top_p", "bon_gaussian", "greedy"]
    assert all(len(row["curve"]) == 2 for row in result["summary"])
    assert (tmp_path / "out" / "bench_quality.json").is_file() and (tmp_path / "out" / "vader" / "curves.png").is_file()


def test_bench_iteration_times_both_cases_at_the_fixed_length(tmp_path):
    path = save_tiny_lm(tmp_path / "lm")
    module = _script("bench_iteration")
    args = module.make_parser().parse_args(
        ["--model_name_or_path", str(path), "--sample_size", "2", "--max_new_tokens", "4", "--pairs", "2"]
    )
    result = module.main(args)
    assert result["plain_median_s"] > 0 and result["aisp_median_s"] > 0
    assert math.isfinite(result["ratio_of_medians"]) and result["min_paired_ratio"] <= result["max_paired_ratio"]
