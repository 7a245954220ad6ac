"""The recipes end to end, in-process, on a tiny Llama and a tiny reward model saved to a folder."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from _tiny import load_script
from datasets import load_from_disk
from scripts.tiny_checkpoints import save_tiny_lm, save_tiny_reward_model

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "recipes" / "configs"


def _recipe(name: str):
    return load_script("recipes", name)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    root = tmp_path_factory.mktemp("checkpoints")
    return save_tiny_lm(root / "lm"), save_tiny_reward_model(root / "rm")


def _parse(recipe, config: str, checkpoints, output_dir: Path, *extra: str):
    lm, rm = checkpoints
    argv = [
        "--config", str(CONFIGS / config), "--model_name_or_path", str(lm), "--reward", str(rm),
        "--output_dir", str(output_dir), "--prompt_source", str(ROOT / "tests" / "fixtures" / "prompts.jsonl"),
        *extra,
    ]  # fmt: skip
    return recipe.make_parser().parse_args_and_config(args=argv)


def test_distill_recipe_end_to_end(checkpoints, tmp_path, capsys):
    recipe = _recipe("distill_aisp")
    script_args, training_args, model_args = _parse(recipe, "tiny_distill.yaml", checkpoints, tmp_path)
    report = recipe.main(script_args, training_args, model_args)

    assert set(report["rewards"]) == {
        "base greedy (held-out)",
        "distilled greedy (held-out)",
        "base greedy (train prompts)",
        "AISP best (train prompts)",
    }
    assert report["rewards"]["AISP best (train prompts)"] >= report["rewards"]["base greedy (train prompts)"] - 1e-9
    assert report["counts"] == {"train_prompts": 4, "eval_prompts": 2, "sft_rows": 4}
    assert report["training"]["steps"] == 2
    assert json.loads((tmp_path / "report.json").read_text())["rewards"] == report["rewards"]
    markdown = (tmp_path / "report.md").read_text()
    assert "| distilled greedy (held-out) |" in markdown
    # the report states its own uncertainty: prompt counts, a 95% CI per mean, the paired gain, and a warning
    held_out = report["uncertainty"]["distilled greedy (held-out)"]
    assert held_out["prompts"] == 2 and held_out["ci95"][0] <= held_out["mean"] <= held_out["ci95"][1]
    assert held_out["mean"] == pytest.approx(report["rewards"]["distilled greedy (held-out)"])
    assert report["uncertainty"]["AISP best (train prompts)"]["prompts"] == 4
    assert report["paired"]["distilled greedy (held-out) − base greedy (held-out)"]["pairs"] == 2
    warning = "2 prompts, one seed: a smoke test, not a result"
    assert warning in report["warning"] and warning in markdown and warning in capsys.readouterr().out
    assert "| mean reward | 95% CI | std | prompts |" in markdown
    assert report["training"]["update_norm"] > 0  # the model did change
    dataset_dir = tmp_path / "aisp" / "sft_dataset"  # the folder the README names loads as is
    assert load_from_disk(str(dataset_dir)).column_names == ["prompt", "completion", "prompt_id", "reward"]
    card = (dataset_dir / "README.md").read_text()
    assert "AISP sft dataset" in card and str(checkpoints[0]) in card and "`sample_size`: 4" in card
    assert (tmp_path / "model.safetensors").is_file()
    assert len((tmp_path / "aisp" / "records.jsonl").read_text().splitlines()) == 4

    # a rerun of the finished command says so and keeps the trained model instead of training again
    model_file = tmp_path / "model.safetensors"
    trained = model_file.stat().st_mtime_ns
    capsys.readouterr()
    script_args, training_args, model_args = _parse(recipe, "tiny_distill.yaml", checkpoints, tmp_path)
    again = recipe.main(script_args, training_args, model_args)
    assert "already holds a finished training" in capsys.readouterr().out and "--overwrite_output_dir" in recipe.__doc__
    assert again["rewards"] == report["rewards"] and model_file.stat().st_mtime_ns == trained


def test_dpo_recipe_end_to_end_with_lora(checkpoints, tmp_path):
    recipe = _recipe("aisp_dpo")
    script_args, training_args, model_args = _parse(
        recipe, "tiny_dpo.yaml", checkpoints, tmp_path, "--use_peft", "--lora_r", "4", "--loss_type", "ipo"
    )
    assert training_args.loss_type == ["ipo"] and model_args.use_peft
    report = recipe.main(script_args, training_args, model_args)

    assert "DPO greedy (held-out)" in report["rewards"] and report["method"].startswith("DPO (ipo)")
    assert report["counts"]["pairs"] == 4 and report["training"]["steps"] == 2
    dataset = load_from_disk(str(tmp_path / "aisp" / "preference_dataset"))
    assert {"chosen", "rejected", "margin", "chosen_reward", "rejected_reward"} <= set(dataset.column_names)
    # chosen = the best AISP sample, rejected = the worst one of the same prompt, margin = their difference
    records = {r["prompt_id"]: r for r in map(json.loads, (tmp_path / "aisp" / "records.jsonl").open())}
    for row in dataset:
        samples = [s["reward"] for s in records[row["prompt_id"]]["samples"]]
        assert row["chosen_reward"] == pytest.approx(max(samples))
        assert row["rejected_reward"] == pytest.approx(min(samples))
        assert row["margin"] == pytest.approx(row["chosen_reward"] - row["rejected_reward"])
    assert any(m > 0 for m in dataset["margin"])  # the random reward model tells the samples apart
    assert (tmp_path / "adapter_model.safetensors").is_file()  # LoRA adapters, reference = adapters off
    assert "2 prompts, one seed: a smoke test" in (tmp_path / "report.md").read_text()
    assert report["uncertainty"]["DPO greedy (held-out)"]["prompts"] == 2
    assert report["training"]["changed_tensors"] == report["training"]["trainable_tensors"] > 0  # every LoRA tensor


def test_dpo_recipe_without_lora_uses_a_reference_copy(checkpoints, tmp_path):
    recipe = _recipe("aisp_dpo")
    script_args, training_args, model_args = _parse(
        recipe, "tiny_dpo.yaml", checkpoints, tmp_path, "--max_steps", "1", "--rejected", "greedy",
        "--drop_nonpositive_margin", "false",
    )  # fmt: skip
    report = recipe.main(script_args, training_args, model_args)
    assert report["training"]["steps"] == 1 and report["counts"]["pairs"] == 4
    assert "rejected = greedy" in report["method"]
    # --overwrite_output_dir trains again (the AISP records are reused) and overwrites the model
    model_file = tmp_path / "model.safetensors"
    os.utime(model_file, ns=(0, 0))
    script_args, training_args, model_args = _parse(
        recipe, "tiny_dpo.yaml", checkpoints, tmp_path, "--max_steps", "1", "--rejected", "greedy",
        "--drop_nonpositive_margin", "false", "--overwrite_output_dir", "true",
    )  # fmt: skip
    again = recipe.main(script_args, training_args, model_args)
    assert again["training"]["steps"] == 1 and model_file.stat().st_mtime_ns > 0
    assert "overwrite_output_dir" not in again["generation"]  # not a generation setting


@pytest.mark.parametrize("name, config", [("distill_aisp", "distill_smollm2.yaml"), ("aisp_dpo", "dpo_smollm2.yaml")])
def test_smollm2_presets_parse(name, config, tmp_path):
    recipe = _recipe(name)
    script_args, training_args, model_args = recipe.make_parser().parse_args_and_config(
        args=["--config", str(CONFIGS / config), "--output_dir", str(tmp_path)]
    )
    assert model_args.model_name_or_path == "smollm2-135m-instruct" and model_args.use_peft
    assert script_args.max_prompts == 16 and script_args.num_eval_prompts == 8 and script_args.reward == "vader"
    assert script_args.aisp_config().total_samples == 32 and training_args.use_cpu


def _one_line(stderr: str, prefix: str) -> str:
    lines = [line for line in stderr.splitlines() if line.startswith(prefix)]
    assert len(lines) == 1, stderr[-3000:]
    return lines[0]


def test_recipe_errors_are_one_line_also_under_accelerate_launch(tmp_path):
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1"}
    env.pop("AISP_TRL_DEBUG", None)
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    # an empty prompt source is named before the (missing) model is looked for
    argv = ["--output_dir", str(tmp_path / "out"), "--reward", "vader", "--model_name_or_path", "does/not/exist"]
    proc = subprocess.run(
        [sys.executable, str(ROOT / "recipes" / "aisp_dpo.py"), "--config", str(CONFIGS / "tiny_dpo.yaml"), *argv,
         "--prompt_source", str(empty)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    line = _one_line(proc.stderr, "aisp_dpo.py: error: ")
    assert f"`source` file {str(empty)!r} has no prompts" in line and "AISP_TRL_DEBUG=1" in line
    # under accelerate launch the script's own line is on stderr, above accelerate's report of the failed process
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--cpu", "--num_processes", "1",
              "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]  # fmt: skip
    proc = subprocess.run(
        [*launch, str(ROOT / "recipes" / "distill_aisp.py"), "--config", str(CONFIGS / "tiny_distill.yaml"), *argv],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode != 0
    line = _one_line(proc.stderr, "distill_aisp.py: error: ")
    assert "`model_name_or_path` 'does/not/exist': folder not found" in line
