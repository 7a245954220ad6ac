"""benchmarks/bench_finetune.py end to end on a tiny saved LM and two tiny reward models: units, report, resume."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from _tiny import letter_reward, load_script
from scripts.tiny_checkpoints import save_tiny_lm, save_tiny_reward_model

from aisp_trl.rewards import as_reward_function

ROOT = Path(__file__).resolve().parents[1]
PROMPTS_FILE = ROOT / "tests" / "fixtures" / "prompts.jsonl"
TRAINED = ("sft_aisp", "sft_bon_top_p", "dpo_aisp", "dpo_bon_top_p")


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def script():
    return load_script("benchmarks", "bench_finetune")


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    root = tmp_path_factory.mktemp("checkpoints")
    return (
        save_tiny_lm(root / "lm"),
        save_tiny_reward_model(root / "rm1", seed=1),
        save_tiny_reward_model(root / "rm2", seed=2),
    )


def _args(script, checkpoints, out: Path, *extra: str):
    lm, rm1, rm2 = checkpoints
    return script.make_parser().parse_args(
        ["--model_name_or_path", str(lm), "--rewards", str(rm1), str(rm2), "--seeds", "0", "1",
         "--prompt_source", str(PROMPTS_FILE), "--num_train_prompts", "3", "--num_eval_prompts", "2",
         "--framing", "none", "--sample_size", "2", "--n_iterations", "2", "--prompt_batch_size", "2",
         "--max_new_tokens", "4", "--max_steps", "2", "--per_device_train_batch_size", "2", "--max_length", "64",
         "--learning_rate", "1e-2", "--threads", "1", "--output_dir", str(out), *extra]
    )  # fmt: skip


def test_bench_finetune_end_to_end_resume_and_report(script, checkpoints, tmp_path, monkeypatch):
    out = tmp_path / "out"
    _, rm1, rm2 = checkpoints
    report = script.main(_args(script, checkpoints, out))

    # every (reward, stage, seed) unit is on disk: 2 data sources, AISP on the held-out prompts and 4 models per
    # (reward, seed), the deterministic base once per reward, BoN decoded once per seed for both rewards
    units = sorted((out / "units").rglob("*.json"))
    assert len(units) == 2 * (2 * (2 + 1 + 4) + 1) + 2
    for reward in (rm1, rm2):
        key = script.reward_key(str(reward))
        assert (out / "units" / key / "base" / "all.json").is_file()
        for stage in ("data_aisp", "data_bon_top_p", "aisp_held_out", *TRAINED):
            assert {p.name for p in (out / "units" / key / stage).iterdir()} == {"seed0.json", "seed1.json"}

    # the trained models moved away from the base: every LoRA tensor changed, and the adapters are saved
    for name in TRAINED:
        unit = json.loads((out / "units" / script.reward_key(str(rm1)) / name / "seed1.json").read_text())
        training = unit["training"]
        assert training["steps"] == 2 and training["update_norm"] > 0
        assert training["changed_tensors"] == training["trainable_tensors"] > 0
        assert len(unit["rewards"]) == len(unit["nll_per_token"]) == len(unit["coherence"]) == 2
        assert all(math.isfinite(v) and v > 0 for v in unit["nll_per_token"])
        adapter = out / "models" / script.reward_key(str(rm1)) / name / "seed1" / "adapter_model.safetensors"
        assert adapter.is_file()

    # same budget: both sources drew N = 2 * 2 samples for every training prompt; BoN was decoded once and re-scored
    section = report["rewards"][str(rm1)]
    assert section["same_budget"] is True
    assert section["data"]["aisp"]["samples_per_prompt"] == section["data"]["bon_top_p"]["samples_per_prompt"] == [4]
    assert section["data"]["aisp"]["sft_rows"] == [3, 3]
    bon = [script.decode_records(out / "data" / script.reward_key(str(r)) / "bon_top_p" / "seed0") for r in (rm1, rm2)]
    texts = [[s["completion"] for s in rec["samples"]] for rec in bon[0]]
    assert texts == [[s["completion"] for s in rec["samples"]] for rec in bon[1]]  # the same samples ...
    assert [s["reward"] for s in bon[0][0]["samples"]] != [s["reward"] for s in bon[1][0]["samples"]]  # re-scored

    # the report: every model with a CI, P for the trained ones, the paired comparisons, wall times, a warning
    assert set(section["models"]) == {"base", "aisp", *TRAINED}
    assert section["models"]["sft_aisp"]["seeds"] == [0, 1] and section["models"]["base"]["seeds"] == [None]
    for row in section["models"].values():
        mean, low, high = row["held_out_reward"]
        assert low <= mean <= high
    assert set(section["gap_recovered"]) == set(TRAINED)
    assert {"sft_aisp vs sft_bon_top_p", "dpo_aisp vs dpo_bon_top_p", "dpo_aisp vs sft_aisp"} <= set(section["paired"])
    dpo_sft = section["paired"]["dpo_aisp vs sft_aisp"]
    assert dpo_sft["pairs"] == 4 and len(dpo_sft["per_seed"]) == 2  # 2 seeds x 2 held-out prompts
    assert sum(dpo_sft["per_seed"]) / 2 == pytest.approx(dpo_sft["diff"])  # per-seed means average to the mean
    assert section["paired"]["sft_aisp vs base"]["pairs"] == 4  # the base pairs with every seed
    assert {"data_aisp", "data_bon_top_p", "aisp_held_out", "base eval", *TRAINED} <= set(section["seconds"])
    assert "smoke test, not a result" in report["warning"]
    markdown = (out / "report.md").read_text()
    assert "| DPO on AISP pairs − SFT on AISP bests |" in markdown and "> **Warning**" in markdown
    assert (out / "held_out.png").is_file() and json.loads((out / "report.json").read_text())["rewards"]

    # the report covers the seeds asked for; a missing unit makes the rows uneven, which the report says
    one = script.main(_args(script, checkpoints, out, "--seeds", "0", "--report_only"))
    assert one["rewards"][str(rm1)]["models"]["sft_aisp"]["seeds"] == [0]
    assert "unfinished" not in one["warning"]
    moved = out / "units" / script.reward_key(str(rm1)) / "dpo_aisp" / "seed1.json"
    moved.rename(moved.with_suffix(".bak"))
    uneven = script.main(_args(script, checkpoints, out, "--report_only"))
    assert uneven["rewards"][str(rm1)]["models"]["dpo_aisp"]["seeds"] == [0]
    assert f"unfinished units ({rm1})" in uneven["warning"]
    moved.with_suffix(".bak").rename(moved)

    # a rerun does not redo any finished unit (nothing generates or trains) and rebuilds the same report
    stamps = {p: p.stat().st_mtime_ns for p in units}
    for name in ("train_sft", "train_dpo", "run_generation"):
        monkeypatch.setattr(script, name, lambda *a, _n=name, **k: pytest.fail(f"{_n} ran again"))
    again = script.main(_args(script, checkpoints, out))
    assert all(p.stat().st_mtime_ns == stamps[p] for p in units)
    same = json.loads(json.dumps(again["rewards"][str(rm1)]["models"]))
    assert same == json.loads(json.dumps(section["models"]))

    # a killed run: only the missing unit is redone
    lost = out / "units" / script.reward_key(str(rm2)) / "dpo_bon_top_p" / "seed1.json"
    lost.unlink()
    calls = []
    from aisp_trl import training

    def counting_train_dpo(*a, **k):
        calls.append("dpo")
        return training.train_dpo(*a, **k)

    monkeypatch.setattr(script, "train_dpo", counting_train_dpo)
    script.main(_args(script, checkpoints, out))
    assert calls == ["dpo"] and lost.is_file()
    assert all(p.stat().st_mtime_ns == stamps[p] for p in units if p != lost)

    # units of other settings are refused with what differs
    with pytest.raises(ValueError, match="max_steps=2"):
        script.main(_args(script, checkpoints, out, "--max_steps", "3"))
    # ... and so are units made under other AISP defaults (the full AISP configuration is part of the settings)
    first = out / "units" / script.reward_key(str(rm1)) / "data_aisp" / "seed0.json"
    saved = json.loads(first.read_text())
    assert saved["settings"]["aisp"]["sample_size"] == 2 and saved["settings"]["aisp"]["lam"] == "auto"
    saved["settings"]["aisp"]["ess_target"] = 0.5
    first.write_text(json.dumps(saved))
    with pytest.raises(ValueError, match="other settings \\(aisp="):
        script.main(_args(script, checkpoints, out))


def test_bench_finetune_checks_arguments_first(script, checkpoints, tmp_path):
    with pytest.raises(ValueError, match="`--sample_size` x `--n_iterations` = 1"):
        script.main(_args(script, checkpoints, tmp_path, "--sample_size", "1", "--n_iterations", "1"))
    with pytest.raises(ValueError, match="`--num_eval_prompts` must be >= 1, got 0"):
        script.main(_args(script, checkpoints, tmp_path, "--num_eval_prompts", "0"))
    with pytest.raises(ValueError, match=r"too few prompts.*--num_train_prompts \(50\)"):  # 12 prompts in the file
        script.main(_args(script, checkpoints, tmp_path, "--num_train_prompts", "50"))
    assert not (tmp_path / "units").exists()


def test_rescore_records_recomputes_best_and_greedy(script):
    records = [
        {
            "prompt": "p",
            "query": "q ",
            "samples": [
                {"text": "q aaa", "completion": "aaa", "completion_ids": [1], "reward": 0.0},
                {"text": "q eee", "completion": "eee", "completion_ids": [2], "reward": 0.0},
                {"text": "q eab", "completion": "eab", "completion_ids": [3], "reward": 0.0},
            ],
            "best": {"text": "q aaa", "completion": "aaa", "completion_ids": [1], "reward": 0.0},
            "greedy": {"completion": "ee", "completion_ids": [2, 2], "reward": 0.0},
        }
    ]
    rescored = script.rescore_records(records, as_reward_function(letter_reward("e")))
    record = rescored[0]
    assert [s["reward"] for s in record["samples"]] == pytest.approx([0.0, 3 / 5, 1 / 5])  # "q eee" is 5 chars
    assert record["best"]["completion"] == "eee" and record["best_so_far"] == pytest.approx([3 / 5])
    assert record["greedy"]["reward"] == pytest.approx(2 / 4)  # scored on query + completion, "q ee"
    assert records[0]["samples"][1]["reward"] == 0.0  # the input is left as it was
