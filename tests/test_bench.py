"""The benchmark scripts' core functions on tiny models: finite ratios, fixed decode length, tables and JSON."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import pytest
from _tiny import letter_reward, load_script, make_model, make_tokenizer
from scripts.tiny_checkpoints import save_tiny_lm, save_tiny_reward_model

ROOT = Path(__file__).resolve().parents[1]
PROMPTS_FILE = ROOT / "tests" / "fixtures" / "prompts.jsonl"


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _script(name: str):
    return load_script("benchmarks", name)


measure_overhead = _script("bench_overhead").measure_overhead


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
        ["--model_name_or_path", str(path), "--sample_size", "2", "--max_new_tokens", "4", "--pairs", "3",
         "--kl_coef", "0.1"]
    )  # fmt: skip
    result = module.main(args)
    assert result["plain_median_s"] > 0 and result["aisp_median_s"] > 0 and result["aisp_kl_median_s"] > 0
    assert math.isfinite(result["ratio_of_medians"]) and result["min_paired_ratio"] <= result["max_paired_ratio"]
    assert result["kl_over_aisp_ratio_of_medians"] == pytest.approx(
        result["aisp_kl_median_s"] / result["aisp_median_s"]
    )


def test_bench_vs_bon_units_resume_rescore_and_report(tmp_path, monkeypatch):
    lm = save_tiny_lm(tmp_path / "lm")
    script = _script("bench_vs_bon")
    out = tmp_path / "out"

    def args(*rewards):
        return script.parse_args(
            ["--model_name_or_path", str(lm), "--prompt_source", str(PROMPTS_FILE), "--num_prompts", "2",
             "--sample_size", "2", "--n_iterations", "2", "--prompt_batch_size", "2", "--max_new_tokens", "4",
             "--checkpoints", "2", "4", "--seeds", "0", "1", "--threads", "1", "--output_dir", str(out),
             "--variants", "steer:proposal=steering", "--rewards", *rewards]
        )  # fmt: skip

    report = script.main(args("vader"))
    section = report["rewards"]["vader"]
    assert set(section["methods"]) == {"aisp", "bon_top_p", "bon_gaussian", "greedy", "steer"}
    assert section["methods"]["aisp"]["seeds"] == [0, 1] and section["methods"]["greedy"]["seeds"] == [0]
    paired = section["paired"]["aisp vs bon_top_p"]
    assert paired["pairs"] == 4 and paired["wins"] + paired["ties"] + paired["losses"] == pytest.approx(1.0)
    assert len(section["curves"]["bon_top_p"]) == 4 and section["curves"]["aisp"] == sorted(section["curves"]["aisp"])
    units = sorted((out / "units").rglob("*.json"))
    assert len(units) == 9  # 4 sampling methods x 2 seeds + greedy once
    assert (out / "report.md").read_text().count("| AISP (defaults) |") == 1 and (out / "curves.png").is_file()

    # a second reward: the finished units are kept, the baselines are re-scored without decoding again
    stamps = {p: p.stat().st_mtime_ns for p in units}
    from aisp_trl import BestOfNSampler, GaussianBestOfNSampler

    for cls in (BestOfNSampler, GaussianBestOfNSampler):
        monkeypatch.setattr(cls, "search", lambda *a, **k: pytest.fail("baseline decoded again"))
    report = script.main(args("vader", "relevance"))
    assert all(p.stat().st_mtime_ns == stamps[p] for p in units)
    rescored = json.loads((out / "units" / "relevance" / "bon_top_p" / "seed0.json").read_text())
    original = json.loads((out / "units" / "vader" / "bon_top_p" / "seed0.json").read_text())
    assert len(rescored["prompts"][0]["rewards"]) == len(original["prompts"][0]["rewards"]) == 4
    assert "relevance" in report["rewards"]

    # a unit made under other package defaults must not pass for the current ones
    unit_file = out / "units" / "vader" / "aisp" / "seed0.json"
    saved = json.loads(unit_file.read_text())
    assert saved["aisp_config"]["sample_size"] == 2 and saved["aisp_config"]["lam"] == "auto"
    saved["aisp_config"]["ess_target"] = 0.5
    unit_file.write_text(json.dumps(saved))
    with pytest.raises(ValueError, match="did a default change"):
        script.main(args("vader"))

    with pytest.raises(ValueError, match="not a tunable AISPConfig field"):
        script.parse_variants(["x:seed=3"])
    with pytest.raises(ValueError, match="proposal"):
        script.parse_variants(["x:proposal=nope"])


def _vs_bon_args(script, lm, rm, out, *extra):
    return script.parse_args(
        ["--model_name_or_path", str(lm), "--prompt_source", str(PROMPTS_FILE), "--num_prompts", "2",
         "--sample_size", "2", "--n_iterations", "2", "--prompt_batch_size", "2", "--max_new_tokens", "4",
         "--threads", "1", "--output_dir", str(out), "--rewards", str(rm), "--methods", "aisp", "bon_top_p", *extra]
    )  # fmt: skip


def test_bench_vs_bon_report_takes_the_budget_the_seeds_asked_for_and_variants_by_kind(tmp_path):
    lm, rm = save_tiny_lm(tmp_path / "lm"), save_tiny_reward_model(tmp_path / "rm")
    script = _script("bench_vs_bon")
    out = tmp_path / "out"
    # --checkpoints without N itself, and a budget (n * kappa = 4) not among the default checkpoints
    report = script.main(_vs_bon_args(script, lm, rm, out, "--checkpoints", "2", "--seeds", "0", "1",
                                      "--variants", "bonus:sigma2=0.5"))  # fmt: skip
    section = report["rewards"][str(rm)]
    assert "N=4" in section["methods"]["aisp"] and "N=2" in section["methods"]["aisp"]
    assert section["paired"]["aisp vs bon_top_p"]["pairs"] == 4
    # a variant named "bon..." is an AISP variant: best so far in order, not BoN's expected best of N
    units = [json.loads(next((out / "units").glob(f"*/bonus/seed{i}.json")).read_text()) for i in (0, 1)]
    best_so_far = [sum(max(u["prompts"][j]["rewards"][:2]) for u in units) / 2 for j in range(2)]  # seed mean
    expected_best = [sum(script.expected_best_of(u["prompts"][j]["rewards"], 2) for u in units) / 2 for j in range(2)]
    assert section["methods"]["bonus"]["N=2"][0] == pytest.approx(sum(best_so_far) / 2, abs=1e-9)
    assert best_so_far != expected_best  # the two scorings differ here, so the check above can tell them apart
    assert "bonus vs bon_top_p" in section["paired"]
    # the report holds the seeds asked for, not every seed on disk
    report = script.main(_vs_bon_args(script, lm, rm, out, "--seeds", "0", "--report_only"))
    assert report["rewards"][str(rm)]["methods"]["aisp"]["seeds"] == [0]
    assert report["rewards"][str(rm)]["paired"]["aisp vs bon_top_p"]["pairs"] == 2


def test_a_unit_killed_while_written_leaves_no_unit_behind(tmp_path, monkeypatch):
    from _common import UnitStore

    store = UnitStore(tmp_path, {"a": 1})
    path = store.path("r", "m", "seed0")
    real_write = Path.write_text

    def killed(self, text, *args, **kwargs):  # the process dies half-way through the write
        real_write(self, text[: len(text) // 2])
        raise KeyboardInterrupt

    monkeypatch.setattr(Path, "write_text", killed)
    with pytest.raises(KeyboardInterrupt):
        store.get_or_compute(path, lambda: {"value": list(range(100))}, "unit")
    monkeypatch.undo()
    assert not path.exists()  # only the temporary file was cut: a rerun computes the unit again
    assert store.get_or_compute(path, lambda: {"value": [1]}, "unit")["value"] == [1]
    assert json.loads(path.read_text())["value"] == [1]


def test_bench_vs_bon_runs_the_control_and_records_tokens(tmp_path):
    lm = save_tiny_lm(tmp_path / "lm")
    script = _script("bench_vs_bon")
    out = tmp_path / "out"
    args = script.parse_args(
        ["--model_name_or_path", str(lm), "--prompt_source", str(PROMPTS_FILE), "--num_prompts", "2",
         "--sample_size", "2", "--n_iterations", "2", "--prompt_batch_size", "2", "--max_new_tokens", "4",
         "--seeds", "0", "--threads", "1", "--output_dir", str(out), "--rewards", "vader",
         "--methods", "aisp", "bon_aisp_proposal"]
    )  # fmt: skip
    report = script.main(args)
    section = report["rewards"]["vader"]
    assert "aisp vs bon_aisp_proposal" in section["paired"]
    unit = json.loads((out / "units" / "vader" / "bon_aisp_proposal" / "seed0.json").read_text())
    assert unit["aisp_config"]["proposal"] == "ar1" and len(unit["prompts"][0]["rewards"]) == 4
    assert all(0 < p["tokens"] <= 4 * 4 for p in unit["prompts"])  # N = 4 samples of at most 4 tokens
    assert "repetitive / off-topic" in (out / "report.md").read_text()


def test_bench_vs_bon_tunes_bon_top_p_temperature_and_records_it(tmp_path):
    script = _script("bench_vs_bon")
    lm = save_tiny_lm(tmp_path / "lm")
    base = ["--model_name_or_path", str(lm), "--top_p", "1.0"]
    hot = script.parse_args([*base, "--temperature", "1.5"])
    default = script.parse_args(base)
    model, tok = make_model("llama"), make_tokenizer()
    sampler = script.build_sampler("bon_top_p", {}, 0, model, tok, letter_reward(), hot)
    assert (sampler.gen_config.temperature, sampler.gen_config.top_p) == (1.5, 1.0)
    assert script.settings_of(hot)["temperature"] == 1.5 and "temperature" not in script.settings_of(default)


def test_bench_vs_bon_bon_variants_are_tuned_bons_with_their_own_settings_and_budget(tmp_path):
    lm, rm = save_tiny_lm(tmp_path / "lm"), save_tiny_reward_model(tmp_path / "rm")
    script = _script("bench_vs_bon")
    out = tmp_path / "out"
    args = _vs_bon_args(script, lm, rm, out, "--seeds", "0", "--checkpoints", "2",
                        "--bon_variants", "tuned:temperature=0.7,top_p=0.95", "big:top_p=1.0,samples=8")  # fmt: skip
    report = script.main(args)
    section = report["rewards"][str(rm)]
    assert {"aisp vs bon_top_p", "aisp vs tuned", "aisp vs big"} <= set(section["paired"])
    tuned = json.loads(next((out / "units").glob("*/tuned/seed0.json")).read_text())
    big = json.loads(next((out / "units").glob("*/big/seed0.json")).read_text())
    assert tuned["overrides"] == {"temperature": 0.7, "top_p": 0.95} and len(tuned["prompts"][0]["rewards"]) == 4
    assert len(big["prompts"][0]["rewards"]) == 8 and len(section["curves"]["big"]) == 8  # its own N: 8 > budget 4
    assert section["methods"]["big"]["samples"] == 8
    # at the budget, the large-N BoN is the expected best of 4 of its 8 samples
    expected = [script.expected_best_of(p["rewards"], 4) for p in big["prompts"]]
    assert section["methods"]["big"]["N=4"][0] == pytest.approx(sum(expected) / len(expected))
    paired = section["paired"]["aisp vs big"]
    m = paired["samples_to_match"]
    assert m == script.samples_to_match(section["curves"]["big"], section["methods"]["aisp"]["N=4"][0])
    if math.isfinite(m):
        assert paired["seconds_to_match"] == pytest.approx(m * section["methods"]["big"]["seconds"] / 8)
    assert "BoN (top-p) tuned: T 0.7, p 0.95" in (out / "report.md").read_text()
    assert (out / "samples" / "tuned" / "seed0.json").is_file()
    # the variant's settings reach the sampler
    model, tok = make_model("llama"), make_tokenizer()
    sampler = script.build_sampler("bon_top_p", {"temperature": 0.7, "top_p": 0.95, "samples": 8}, 0, model, tok,
                                   letter_reward(), args)  # fmt: skip
    assert (sampler.gen_config.temperature, sampler.gen_config.top_p, sampler.sample_size) == (0.7, 0.95, 8)
    for bad, match in (("x:top_k=3", "not one of"), ("x:samples=5", "multiple of"), ("x:samples=2", "at least"),
                       ("x:top_p=1.5", "top_p must be"), ("aisp:top_p=1.0", "new name")):  # fmt: skip
        with pytest.raises(ValueError, match=match):
            script.parse_bon_variants([bad], 2, 4)


def test_repetitive_answers_are_scored_as_greedy_in_the_guarded_column():
    script = _script("bench_vs_bon")
    args = script.parse_args(["--sample_size", "2", "--n_iterations", "1", "--seeds", "0", "--rewards", "vader",
                              "--checkpoints", "2"])  # fmt: skip

    def unit(method, rewards, answers):
        prompts = [
            {"prompt": f"Describe topic {j}.", "rewards": r, "best_reward": max(r), "best_completion": a,
             "nll_per_token": 1.0, "coherence": 0.5, "tokens": 3 * len(r)}
            for j, (r, a) in enumerate(zip(rewards, answers, strict=True))
        ]  # fmt: skip
        return {"reward": "vader", "method": method, "seed": 0, "seconds": 1.0, "prompts": prompts}

    units = [
        unit("aisp", [[0.2, 0.9], [0.1, 0.8]], ["great great great", "topic one is fine"]),
        unit("greedy", [[0.3], [0.4]], ["greedy answer zero", "greedy answer one"]),
        unit("bon_top_p", [[0.5, 0.6], [0.7, 0.2]], ["topic zero, said well", "a fine answer on one"]),
    ]
    kinds = {"aisp": "aisp", "greedy": "greedy", "bon_top_p": "bon_top_p"}
    section = script.build_report(units, args, kinds)["rewards"]["vader"]
    row = section["methods"]["aisp"]
    assert row["N=2"][0] == pytest.approx((0.9 + 0.8) / 2)  # raw: the repetition's 0.9 counts
    assert row["degenerate_as_greedy"][0] == pytest.approx((0.3 + 0.8) / 2)  # guarded: prompt 0 falls back to greedy
    assert row["degenerate"] == 1
    # paired against BoN twice, prompt by prompt: raw (0.9 - 0.6, 0.8 - 0.7; BoN's expected best of its 2 samples is
    # their max) and guarded (0.3 - 0.6, 0.8 - 0.7); greedy gets no guarded pairing
    assert section["paired_as_greedy"]["aisp vs bon_top_p"]["diff"] == pytest.approx(((0.3 - 0.6) + (0.8 - 0.7)) / 2)
    assert section["paired_as_greedy"]["aisp vs bon_top_p"]["wins"] == pytest.approx(0.5)
    assert section["paired"]["aisp vs bon_top_p"]["diff"] == pytest.approx(((0.9 - 0.6) + (0.8 - 0.7)) / 2)
    assert set(section["paired_as_greedy"]) == {"aisp vs bon_top_p"}
    markdown = script.report_markdown({"settings": script.settings_of(args), "rewards": {"vader": section}}, args)
    assert "| AISP (defaults) − BoN (top-p): rewards, repetitive as greedy | -0.100 [" in markdown


def test_bench_vs_bon_with_kl_coef_ranks_every_method_by_the_regularised_score(tmp_path, monkeypatch):
    lm, rm = save_tiny_lm(tmp_path / "lm"), save_tiny_reward_model(tmp_path / "rm")
    script = _script("bench_vs_bon")
    out = tmp_path / "out"
    args = _vs_bon_args(script, lm, rm, out, "--seeds", "0", "--kl_coef", "0.5", "--methods", "aisp", "bon_top_p")
    report = script.main(args)
    section = report["rewards"][str(rm)]
    for method in ("aisp", "bon_top_p"):
        unit = json.loads(next((out / "units").glob(f"*/{method}/seed0.json")).read_text())
        assert unit["settings"]["kl_coef"] == 0.5
        for p in unit["prompts"]:
            assert p["scores"] == pytest.approx([r - 0.5 * k for r, k in zip(p["rewards"], p["kls"], strict=True)])
            assert p["best_kl"] in p["kls"]
        assert "chosen_reward" in section["methods"][method] and "chosen_kl" in section["methods"][method]
        # the table is on the objective: the best score at N = 4
        best = sum(max(p["scores"]) for p in unit["prompts"]) / len(unit["prompts"])
        if method == "aisp":
            assert section["methods"][method]["N=4"][0] == pytest.approx(best)
    # the markdown says the table is on s and shows the chosen answers' reward and KL beside it
    markdown = (out / "report.md").read_text()
    assert "best score s = r - 0.5 * KL" in markdown
    chosen = section["methods"]["aisp"]["chosen_reward"][0]
    assert "| chosen reward | chosen KL |" in markdown and f"{chosen:.3f} [" in markdown
    # a second reward re-scores BoN's cached samples with their saved KL, without decoding again
    from aisp_trl import BestOfNSampler

    monkeypatch.setattr(BestOfNSampler, "search", lambda *a, **k: pytest.fail("decoded again"))
    args = _vs_bon_args(script, lm, rm, out, "--seeds", "0", "--kl_coef", "0.5", "--methods", "bon_top_p",
                        "--rewards", "vader")  # fmt: skip
    report = script.main(args)
    unit = json.loads((out / "units" / "vader" / "bon_top_p" / "seed0.json").read_text())
    assert all(p["kls"] and None not in p["kls"] for p in unit["prompts"])


def test_the_base_nll_pass_over_cached_samples_is_counted_once_in_the_units_seconds(tmp_path, monkeypatch):
    lm, rm = save_tiny_lm(tmp_path / "lm"), save_tiny_reward_model(tmp_path / "rm")
    script = _script("bench_vs_bon")
    plain_out, kl_out = tmp_path / "plain", tmp_path / "kl"
    script.main(_vs_bon_args(script, lm, rm, plain_out, "--seeds", "0", "--methods", "bon_top_p"))
    decoded = json.loads((plain_out / "samples" / "bon_top_p" / "seed0.json").read_text())["seconds"]

    def slow_nll(saved, *args):  # a pass that takes 1 s and says so, as `_add_base_nll` does
        time.sleep(1.0)
        for rows in saved["prompts"]:
            rows["nlls"] = [0.0] * len(rows["completion_ids"])
        saved["nll_seconds"] = 1.0

    monkeypatch.setattr(script, "_add_base_nll", slow_nll)
    extra = ("--seeds", "0", "--methods", "bon_top_p", "--kl_coef", "2.0", "--samples_dir", str(plain_out / "samples"))
    script.main(_vs_bon_args(script, lm, rm, kl_out, *extra))
    unit = json.loads(next((kl_out / "units").glob("*/bon_top_p/seed0.json")).read_text())
    # decode + the pass once + the re-scoring (the pass counted twice would be >= 2)
    assert decoded + 1.0 <= unit["seconds"] < decoded + 2.0


def test_a_kl_coef_run_ranks_a_plain_runs_cached_bon_samples_without_decoding_them_again(tmp_path, monkeypatch):
    lm, rm = save_tiny_lm(tmp_path / "lm"), save_tiny_reward_model(tmp_path / "rm")
    script = _script("bench_vs_bon")
    plain_out, kl_out = tmp_path / "plain", tmp_path / "kl"
    script.main(_vs_bon_args(script, lm, rm, plain_out, "--seeds", "0", "--methods", "bon_top_p"))
    from aisp_trl import BestOfNSampler
    from aisp_trl.evaluation.metrics import token_nll
    from aisp_trl.models import load_model_and_tokenizer

    monkeypatch.setattr(BestOfNSampler, "search", lambda *a, **k: pytest.fail("decoded again"))
    extra = ("--seeds", "0", "--methods", "bon_top_p", "--kl_coef", "2.0", "--samples_dir", str(plain_out / "samples"))
    report = script.main(_vs_bon_args(script, lm, rm, kl_out, *extra))
    plain = json.loads(next((plain_out / "units").glob("*/bon_top_p/seed0.json")).read_text())
    unit = json.loads(next((kl_out / "units").glob("*/bon_top_p/seed0.json")).read_text())
    from aisp_trl.data import load_prompts
    from aisp_trl.pipeline import tokenize_prompts

    model, tok = load_model_and_tokenizer(str(lm), device="cpu")
    _, queries = tokenize_prompts(tok, load_prompts(str(PROMPTS_FILE), max_prompts=2))
    cached = json.loads((plain_out / "samples" / "bon_top_p" / "seed0.json").read_text())
    for p, q, rows, query in zip(unit["prompts"], plain["prompts"], cached["prompts"], queries, strict=True):
        assert p["rewards"] == q["rewards"]  # the same samples, re-scored
        forced = [token_nll(model, query, ids) * len(ids) if ids else 0.0 for ids in rows["completion_ids"]]
        assert rows["nlls"] == pytest.approx(forced, rel=1e-4, abs=1e-5)  # -log P_base(y|x), summed
        assert p["scores"] == pytest.approx([r - 2.0 * k for r, k in zip(p["rewards"], p["kls"], strict=True)])
        assert p["kls"] == pytest.approx(rows["nlls"]) and p["best_kl"] == p["kls"][p["scores"].index(max(p["scores"]))]
    assert cached["nll_seconds"] >= 0 and unit["seconds"] >= cached["seconds"]
    assert "chosen_kl" in report["rewards"][str(rm)]["methods"]["bon_top_p"]


def test_kl_frontier_lines_up_the_runs_by_beta_with_the_chosen_answers_reward_and_kl(tmp_path):
    lm, rm = save_tiny_lm(tmp_path / "lm"), save_tiny_reward_model(tmp_path / "rm")
    script, frontier = _script("bench_vs_bon"), _script("kl_frontier")
    samples = tmp_path / "samples"
    runs = []
    for beta in ("0.5", "0"):  # given out of order: the frontier sorts by beta
        out = tmp_path / f"b{beta}"
        script.main(_vs_bon_args(script, lm, rm, out, "--seeds", "0", "--methods", "aisp", "bon_top_p", "greedy",
                                 "--kl_coef", beta, "--samples_dir", str(samples)))  # fmt: skip
        runs.append(str(out))
    result = frontier.main(frontier.FrontierArguments(runs=runs, output_dir=str(tmp_path / "f")))
    points = result["frontier"][str(rm)]
    assert set(points) == {"aisp", "bon_top_p"} and [p["beta"] for p in points["bon_top_p"]] == [0.0, 0.5]
    for beta, run in ((0.0, runs[1]), (0.5, runs[0])):
        unit = json.loads(next((Path(run) / "units").glob("*/bon_top_p/seed0.json")).read_text())
        kls = [p.get("best_kl", p["nll_per_token"] * p["best_tokens"]) for p in unit["prompts"]]
        point = next(p for p in points["bon_top_p"] if p["beta"] == beta)
        assert point["kl"][0] == pytest.approx(sum(kls) / len(kls))
        assert point["reward"][0] == pytest.approx(sum(p["best_reward"] for p in unit["prompts"]) / 2)
    # at beta = 0 the KL comes from the chosen answer's NLL; at beta > 0 from the search, and the two agree
    unit = json.loads(next((Path(runs[0]) / "units").glob("*/bon_top_p/seed0.json")).read_text())
    for p in unit["prompts"]:
        assert p["best_kl"] == pytest.approx(p["nll_per_token"] * p["best_tokens"], rel=1e-4, abs=1e-5)
    text = (tmp_path / "f" / "frontier.md").read_text()
    assert (tmp_path / "f" / "frontier.png").is_file() and "| beta | reward | KL | s |" in text
    point = next(p for p in points["bon_top_p"] if p["beta"] == 0.5)  # s = r - beta * KL, of the means
    assert f"| {point['reward'][0] - 0.5 * point['kl'][0]:.3f} |" in text
    with pytest.raises(FileNotFoundError, match="no report.json"):
        frontier.collect([str(tmp_path / "missing")])


def test_bench_vs_bon_arguments_come_from_flags_or_a_yaml_config_and_are_validated(tmp_path):
    script = _script("bench_vs_bon")
    config = tmp_path / "vs_bon.yaml"
    config.write_text("rewards: [reference, relevance]\nprompt_source: general:fresh\nseeds: [0, 1]\nkl_coef: 0.01\n")
    args = script.parse_args(["--config", str(config), "--num_prompts", "24"])
    assert (args.rewards, args.prompt_source, args.seeds, args.kl_coef, args.num_prompts) == (
        ["reference", "relevance"], "general:fresh", [0, 1], 0.01, 24
    )  # fmt: skip
    assert script.parse_args(["--report_only", "--kl_per_token"]).report_only is True
    with pytest.raises(FileNotFoundError, match="vadr.*also takes 'vader'"):  # before any model loads
        script.parse_args(["--rewards", "vadr"])
    for argv, match in (
        (["--methods", "aisp", "bon"], r"unknown \['bon'\]"),
        (["--top_p", "1.5"], "top_p"),
        (["--kl_coef", "-1"], "kl_coef"),
        (["--num_prompts", "0"], "num_prompts"),
        (["--bon_variants", "t:samples=100"], "multiple of"),
    ):
        with pytest.raises(ValueError, match=match):
            script.parse_args(argv)
