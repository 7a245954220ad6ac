"""The generation pipeline: exactly-once records, resume after a kill, 2 processes, and trl training on the output."""

from __future__ import annotations

import copy
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from _tiny import EOS_ID, letter_reward, make_model, make_tokenizer

from aisp_trl import AISPConfig
from aisp_trl.data import build_preference_dataset, build_sft_dataset, load_prompts
from aisp_trl.evaluation.report import MIN_RESULT_PROMPTS, report_uncertainty, smoke_test_warning, write_report
from aisp_trl.pipeline import (
    RECORDS_FILE,
    AISPGenerationArguments,
    evaluate_greedy,
    load_records,
    run_generation,
    shard_path,
    summarize_records,
)
from aisp_trl.prompts import BUILTIN_PROMPTS, prompt_split

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures"
PROMPTS = load_prompts(str(FIXTURES / "prompts.jsonl"))
CONFIG = AISPConfig(sample_size=4, n_iterations=2, prompt_batch_size=1, seed=0)
KW = dict(max_new_tokens=6, framing="none", show_progress=False)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def lm():
    return make_model("llama"), make_tokenizer()


@pytest.fixture(scope="module")
def reference(lm, tmp_path_factory):
    """An uninterrupted single-process run over the first 7 prompts."""
    model, tokenizer = lm
    out = tmp_path_factory.mktemp("reference")
    return run_generation(model, tokenizer, letter_reward(), PROMPTS[:7], CONFIG, out, **KW)


def _essence(records: list[dict]) -> list[tuple]:
    return [
        (r["prompt_id"], r["query"], [(s["completion"], s["reward"]) for s in r["samples"]], r["greedy"]["completion"])
        for r in records
    ]


class KilledError(RuntimeError):
    pass


def _dying_reward(after_calls: int):
    """``letter_reward`` that raises (a simulated kill) on call number ``after_calls + 1``."""
    score, calls = letter_reward(), [0]

    def queries_to_scores(texts: list[str]) -> list[float]:
        calls[0] += 1
        if calls[0] > after_calls:
            raise KilledError("killed")
        return score(texts)

    return queries_to_scores


def _shard_ids(out: Path) -> list[int]:
    return [json.loads(line)["prompt_id"] for p in sorted((out / "shards").glob("*.jsonl")) for line in p.open()]


# -- single process ------------------------------------------------------------------------------------------
def test_records_cover_every_prompt_once_with_greedy(lm, reference, tmp_path):
    model, tokenizer = lm
    assert [r["prompt_id"] for r in reference] == list(range(7))
    record = reference[0]
    assert record["prompt_input"] == PROMPTS[0] and record["query"] == PROMPTS[0]
    assert len(record["samples"]) == CONFIG.total_samples and len(record["best_so_far"]) == CONFIG.n_iterations
    assert record["best"]["reward"] == max(s["reward"] for s in record["samples"])
    ids = tokenizer(PROMPTS[0]).input_ids
    greedy = model.generate(torch.tensor([ids]), do_sample=False, max_new_tokens=6)[0, len(ids) :].tolist()
    greedy = greedy[: greedy.index(EOS_ID) + 1] if EOS_ID in greedy else greedy
    assert record["greedy"]["completion_ids"] == greedy
    assert record["greedy"]["reward"] == pytest.approx(letter_reward()([tokenizer.decode(ids + greedy)])[0])
    summary = summarize_records(reference)
    best = [r["best"]["reward"] for r in reference]
    assert summary["num_prompts"] == 7 and summary["aisp_best_reward"] == pytest.approx(sum(best) / 7)
    assert summary["greedy_reward"] == pytest.approx(sum(r["greedy"]["reward"] for r in reference) / 7)
    # the best-so-far curve ends at the best of all n * kappa samples, and never decreases
    assert summary["best_so_far_curve"][-1] == pytest.approx(summary["aisp_best_reward"])
    assert all(r["best_so_far"] == sorted(r["best_so_far"]) for r in reference)


def test_batched_run_matches_and_merged_file(lm, reference, tmp_path):
    model, tokenizer = lm
    config = AISPConfig(sample_size=4, n_iterations=2, prompt_batch_size=3, seed=0)
    records = run_generation(model, tokenizer, letter_reward(), PROMPTS[:7], config, tmp_path, **KW)
    assert [r["prompt_id"] for r in records] == list(range(7))
    assert sorted(_shard_ids(tmp_path)) == list(range(7))
    merged = [json.loads(line) for line in (tmp_path / RECORDS_FILE).open()]
    assert merged == records == load_records(tmp_path)
    # the per-prompt noise streams make the batched run give every prompt the samples of the unbatched one
    assert _essence(records) == _essence(reference)


def test_resume_after_kill_gives_the_same_records(lm, reference, tmp_path):
    model, tokenizer = lm
    # each prompt batch calls the reward n_iterations times for AISP and once for the greedy response
    with pytest.raises(KilledError):
        run_generation(model, tokenizer, _dying_reward(3 * 3 + 1), PROMPTS[:7], CONFIG, tmp_path, **KW)
    assert len(_shard_ids(tmp_path)) == 3
    # a kill while writing leaves a cut line behind: it is dropped and rewritten, never duplicated
    with shard_path(tmp_path, 0).open("a") as shard:
        shard.write('{"prompt_id": 5, "samp')
    resumed = run_generation(model, tokenizer, letter_reward(), PROMPTS[:7], CONFIG, tmp_path, **KW)
    assert sorted(_shard_ids(tmp_path)) == list(range(7))
    assert _essence(resumed) == _essence(reference)
    # a finished run resumes to the same records without generating
    again = run_generation(model, tokenizer, _dying_reward(0), PROMPTS[:7], CONFIG, tmp_path, **KW)
    assert _essence(again) == _essence(reference)


def test_resume_refuses_other_settings_or_prompts(lm, tmp_path):
    model, tokenizer = lm
    run_generation(model, tokenizer, letter_reward(), PROMPTS[:2], CONFIG, tmp_path, **KW)
    other = AISPConfig(sample_size=4, n_iterations=3, prompt_batch_size=1, seed=0)
    with pytest.raises(ValueError, match="holds a run with other settings"):
        run_generation(model, tokenizer, letter_reward(), PROMPTS[:2], other, tmp_path, **KW)
    with pytest.raises(ValueError, match="with another prompt"):
        run_generation(model, tokenizer, letter_reward(), PROMPTS[2:4], CONFIG, tmp_path, **KW)


def test_resume_refuses_another_model_dtype_or_reward(lm, tmp_path):
    model, tokenizer = lm
    first = run_generation(model, tokenizer, letter_reward(), PROMPTS[:2], CONFIG, tmp_path, **KW)
    stored = json.loads((tmp_path / "aisp_run.json").read_text())
    assert (stored["model"], stored["dtype"], stored["reward"]) == ("LlamaForCausalLM", "float32", "queries_to_scores")
    with pytest.raises(ValueError, match=r"model \(`model_name_or_path`\) 'LlamaForCausalLM' then, 'other/lm' now"):
        run_generation(model, tokenizer, letter_reward(), PROMPTS[:2], CONFIG, tmp_path, **KW, model_name="other/lm")
    with pytest.raises(ValueError, match=r"dtype \(`dtype`\) 'float32' then, 'float64' now.*pass a new `output_dir`"):
        run_generation(copy.deepcopy(model).double(), tokenizer, letter_reward(), PROMPTS[:2], CONFIG, tmp_path, **KW)

    def other_reward(texts):
        return [0.0] * len(texts)

    with pytest.raises(ValueError, match=r"reward \(`reward`\) 'queries_to_scores' then, 'other_reward' now"):
        run_generation(model, tokenizer, other_reward, PROMPTS[:2], CONFIG, tmp_path, **KW)
    # the same model, dtype and reward resume (without generating)
    again = run_generation(model, tokenizer, _dying_reward(0), PROMPTS[:2], CONFIG, tmp_path, **KW)
    assert _essence(again) == _essence(first)


def test_run_file_of_an_older_version_still_resumes(lm, tmp_path):
    """Run files written before model / dtype / reward were recorded cannot be checked for them, but resume."""
    model, tokenizer = lm
    first = run_generation(model, tokenizer, letter_reward(), PROMPTS[:2], CONFIG, tmp_path, **KW)
    run_file = tmp_path / "aisp_run.json"
    old = {k: v for k, v in json.loads(run_file.read_text()).items() if k not in ("model", "dtype", "reward")}
    run_file.write_text(json.dumps(old))
    again = run_generation(model, tokenizer, _dying_reward(0), PROMPTS[:2], CONFIG, tmp_path, **KW)
    assert _essence(again) == _essence(first)
    assert json.loads(run_file.read_text())["model"] == "LlamaForCausalLM"  # recorded from now on


def test_repair_shard_truncates_in_place(tmp_path, monkeypatch):
    """A cut last line is removed in place: the complete lines are never rewritten (a kill then would empty them)."""
    from aisp_trl.pipeline import records as pipeline

    shard = tmp_path / "records-00000.jsonl"
    complete = "".join(json.dumps({"prompt_id": i, "pad": "x" * 50}) + "\n" for i in range(200))
    shard.write_text(complete + '{"prompt_id": 200, "sam')

    def killed(*args, **kwargs):  # a rewrite of the file would truncate it to nothing before writing
        raise KilledError("killed during a rewrite")

    monkeypatch.setattr(Path, "write_bytes", killed)
    monkeypatch.setattr(Path, "write_text", killed)
    inode = shard.stat().st_ino
    pipeline._repair_shard(shard, chunk_size=16)  # small chunks: the backwards scan crosses chunk borders
    assert shard.read_text() == complete and shard.stat().st_ino == inode
    pipeline._repair_shard(shard)  # a complete shard is left as is
    assert shard.read_text() == complete
    monkeypatch.undo()
    shard.write_text('{"prompt_id": 0, "sa')  # no complete line at all
    pipeline._repair_shard(shard)
    assert shard.read_text() == ""


def test_unseeded_run_stores_its_seed_for_resume(lm, tmp_path):
    model, tokenizer = lm
    unseeded = AISPConfig(sample_size=4, n_iterations=2, prompt_batch_size=1, seed=None)
    with pytest.raises(KilledError):
        run_generation(model, tokenizer, _dying_reward(3), PROMPTS[:3], unseeded, tmp_path, **KW)
    seed = json.loads((tmp_path / "aisp_run.json").read_text())["aisp"]["seed"]
    assert isinstance(seed, int)
    records = run_generation(model, tokenizer, letter_reward(), PROMPTS[:3], unseeded, tmp_path, **KW)
    seeded = AISPConfig(sample_size=4, n_iterations=2, prompt_batch_size=1, seed=seed)
    fresh = run_generation(model, tokenizer, letter_reward(), PROMPTS[:3], seeded, tmp_path / "fresh", **KW)
    assert _essence(records) == _essence(fresh)


def test_generation_arguments_validate_and_parse_with_trl():
    from trl import DPOConfig, ModelConfig, SFTConfig, TrlParser

    args = AISPGenerationArguments(sample_size=2, n_iterations=3, aisp_seed=5)
    assert args.aisp_config() == AISPConfig(sample_size=2, n_iterations=3, prompt_batch_size=4, seed=5)
    defaults = AISPConfig()  # the AISP defaults follow AISPConfig
    assert (args.sigma2, args.lam, args.alpha) == (defaults.sigma2, defaults.lam, defaults.alpha)
    assert args.output_path("runs/x") == Path("runs/x/aisp")
    with pytest.raises(ValueError, match="`sample_size` must be an integer >= 1, got 0"):
        AISPGenerationArguments(sample_size=0)
    with pytest.raises(ValueError, match="`framing` must be one of"):
        AISPGenerationArguments(framing="llama")
    with pytest.raises(ValueError, match="`max_new_tokens` must be an integer >= 1"):
        AISPGenerationArguments(max_new_tokens=0)
    for config in (SFTConfig, DPOConfig):  # no flag clashes with trl's configs
        TrlParser((AISPGenerationArguments, config, ModelConfig))
    args = AISPGenerationArguments(max_prompts=5, num_eval_prompts=3)
    train, held_out = args.load_prompts()
    assert train == list(BUILTIN_PROMPTS[3:8]) and held_out == list(BUILTIN_PROMPTS[:3])  # first ones held out
    assert "first 3 prompts of 'builtin'" in args.run_info()["held_out_rule"]
    assert AISPGenerationArguments(max_prompts=None, num_eval_prompts=8).load_prompts()[0] == list(BUILTIN_PROMPTS[8:])
    with pytest.raises(ValueError, match=r"too few prompts for max_prompts=32 plus num_eval_prompts=8 \(at most 24"):
        AISPGenerationArguments(max_prompts=32, num_eval_prompts=8).load_prompts()
    with pytest.raises(ValueError, match="too few prompts"):
        AISPGenerationArguments(prompt_source="general", max_prompts=4, num_eval_prompts=1000).load_prompts()


@pytest.mark.parametrize(
    ("source", "extra"),
    [("builtin", {}), ("general", {}), ("general", {"prompt_shuffle_seed": 3}), (str(FIXTURES / "prompts.jsonl"), {})],
)
def test_held_out_prompts_do_not_depend_on_max_prompts(source, extra):
    """Issue 8: changing `--max_prompts` must not move prompts between the held-out and the training set."""
    runs = {
        n: AISPGenerationArguments(prompt_source=source, max_prompts=n, num_eval_prompts=2, **extra).load_prompts()
        for n in (2, 3, 4)
    }
    held_out = runs[2][1]
    assert len(held_out) == 2
    for n, (train, held) in runs.items():
        assert held == held_out and len(train) == n and not set(train) & set(held_out)
    assert runs[2][0] == runs[4][0][:2]  # more training prompts only add prompts
    if source == "general":  # the fixed split of aisp_trl.prompts, never shuffled
        assert held_out == prompt_split("held_out")[:2] and set(runs[4][0]) <= set(prompt_split("train"))


def test_evaluate_greedy_and_report(lm, tmp_path):
    model, tokenizer = lm
    result = evaluate_greedy(model, tokenizer, letter_reward(), PROMPTS[:3], max_new_tokens=6, framing="none")
    assert len(result["rewards"]) == 3 and result["mean_reward"] == pytest.approx(sum(result["rewards"]) / 3)
    path = write_report(tmp_path, {"method": "x", "rewards": {"base": 0.5}, "counts": {"n": 3}}, title="T")
    assert json.loads(path.read_text())["rewards"] == {"base": 0.5}
    markdown = (tmp_path / "report.md").read_text()
    assert "# T" in markdown and "| base | 0.5000 |" in markdown and "`n`: 3" in markdown


def test_report_uncertainty_and_smoke_test_warning(tmp_path):
    per_prompt = {"base": [0.0, 0.2, 0.4], "tuned": [0.1, 0.4, 0.4]}
    extra = report_uncertainty(per_prompt, [("tuned", "base")], num_eval_prompts=3)
    base = extra["uncertainty"]["base"]
    assert base["prompts"] == 3 and base["mean"] == pytest.approx(0.2) and base["std"] == pytest.approx(0.2)
    assert -1e-9 <= base["ci95"][0] <= 0.2 <= base["ci95"][1] <= 0.4 + 1e-9
    paired = extra["paired"]["tuned − base"]
    assert paired["diff"] == pytest.approx(0.1) and paired["wins"] == pytest.approx(2 / 3)
    assert extra["warning"].startswith("3 prompts, one seed: a smoke test, not a result")
    assert smoke_test_warning(MIN_RESULT_PROMPTS) is None and "3 seeds" in smoke_test_warning(8, num_seeds=3)
    assert "warning" not in report_uncertainty(per_prompt, num_eval_prompts=MIN_RESULT_PROMPTS)
    report = {"rewards": {"base": 0.2, "tuned": 0.3}, **extra}
    write_report(tmp_path, report)
    markdown = (tmp_path / "report.md").read_text()
    assert "> **Warning**: 3 prompts, one seed" in markdown and "| tuned − base | +0.1000 [" in markdown
    assert "| base | 0.2000 | [" in markdown and "| 3 |" in markdown and "`prompts`" not in markdown


# -- two processes -------------------------------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_resume_a_killed_run(lm, reference, tmp_path):
    """A single-process run killed after 2 prompts, finished by 2 gloo processes: each prompt exactly once."""
    from scripts.tiny_checkpoints import save_tiny_lm

    model, tokenizer = lm
    model_dir = save_tiny_lm(tmp_path / "lm")  # the same weights as the `lm` fixture (seed 0)
    out = tmp_path / "gen"
    with pytest.raises(KilledError):
        run_generation(model, tokenizer, _dying_reward(6), PROMPTS[:7], CONFIG, out, **KW, model_name=str(model_dir))
    done_before = _shard_ids(out)
    assert len(done_before) == 2  # the two shortest prompts (sorted by token length)

    command = [
        sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
        "--main_process_port", str(_free_port()), str(ROOT / "tests" / "scripts" / "two_process_generation.py"),
        str(model_dir), str(out), str(FIXTURES / "prompts.jsonl"), "7",
    ]  # fmt: skip
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = [json.loads((out / f"result-{rank}.json").read_text()) for rank in (0, 1)]
    assert [r["num_processes"] for r in results] == [2, 2]
    assert all(r["records"] == list(range(7)) for r in results)
    new = results[0]["shard"][2:] + results[1]["shard"]  # rank 0's shard also holds the killed run's prompts
    assert sorted(new) == sorted(set(range(7)) - set(done_before)) and results[1]["shard"]  # both worked
    assert sorted(_shard_ids(out)) == list(range(7))
    assert _essence(load_records(out)) == _essence(reference)


# -- the datasets train with trl -------------------------------------------------------------------------------------
def _changed(before: dict[str, torch.Tensor], model: torch.nn.Module) -> bool:
    return any(not torch.equal(before[n], p.detach()) for n, p in model.named_parameters() if n in before)


def test_sft_dataset_trains_with_sft_trainer(reference, tmp_path):
    from trl import SFTConfig, SFTTrainer

    model, tokenizer = make_model("llama"), make_tokenizer()
    dataset = build_sft_dataset(reference).select_columns(["prompt", "completion"])
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    args = SFTConfig(
        output_dir=str(tmp_path), max_steps=1, per_device_train_batch_size=2, learning_rate=1e-2, report_to="none",
        bf16=False, use_cpu=True, gradient_checkpointing=False, save_strategy="no", max_length=64,
    )  # fmt: skip
    SFTTrainer(model=model, args=args, train_dataset=dataset, processing_class=tokenizer).train()
    assert _changed(before, model)


@pytest.mark.parametrize("loss_type", ["sigmoid", "ipo"])
def test_preference_dataset_trains_with_dpo_trainer(reference, tmp_path, loss_type):
    from trl import DPOConfig, DPOTrainer

    model, tokenizer = make_model("llama"), make_tokenizer()
    dataset = build_preference_dataset(reference, "worst").select_columns(["prompt", "chosen", "rejected"])
    assert len(dataset) > 0
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    args = DPOConfig(
        output_dir=str(tmp_path), max_steps=1, per_device_train_batch_size=2, learning_rate=1e-2, report_to="none",
        bf16=False, use_cpu=True, gradient_checkpointing=False, save_strategy="no", max_length=64,
        loss_type=[loss_type],
    )  # fmt: skip
    trainer = DPOTrainer(
        model=model, ref_model=copy.deepcopy(model), args=args, train_dataset=dataset, processing_class=tokenizer
    )
    trainer.train()
    assert _changed(before, model)


@pytest.mark.parametrize("method", ["bon_top_p", "bon_gaussian"])
def test_baseline_sources_give_records_at_the_same_budget(lm, tmp_path, method):
    # the same pipeline and datasets from best-of-N samples: N = sample_size * n_iterations per prompt, one iteration
    model, tokenizer = lm
    records = run_generation(model, tokenizer, letter_reward(), PROMPTS[:2], CONFIG, tmp_path, **KW, method=method)
    for record in records:
        assert len(record["samples"]) == CONFIG.total_samples == 8
        assert {s["iteration"] for s in record["samples"]} == {1}
        assert record["best"]["reward"] == max(s["reward"] for s in record["samples"])
    assert len(build_sft_dataset(records)) == 2
    assert json.loads((tmp_path / "aisp_run.json").read_text())["method"] == method
    with pytest.raises(ValueError, match="other settings"):  # resuming with another source is refused
        run_generation(model, tokenizer, letter_reward(), PROMPTS[:2], CONFIG, tmp_path, **KW, method="aisp")
    with pytest.raises(ValueError, match="`method` must be one of"):
        run_generation(model, tokenizer, letter_reward(), PROMPTS[:2], CONFIG, tmp_path / "x", **KW, method="beam")
