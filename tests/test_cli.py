"""`aisp-trl generate`: end to end on a tiny saved model (fast) and on the embedded SmolLM2 (slow)."""

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from _tiny import make_model, make_tokenizer

from aisp_trl.cli import GenerateArguments, main, make_parser
from aisp_trl.models import embedded_model_missing


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("tiny-llama")
    make_model("llama").save_pretrained(path)
    make_tokenizer().save_pretrained(path)
    return str(path)


def test_generate_on_a_saved_tiny_model(tiny_dir, tmp_path, capsys):
    out = tmp_path / "records.json"
    main(["generate", "--model_name_or_path", tiny_dir, "--num_prompts", "3", "--max_new_tokens", "6",
          "--sample_size", "2", "--n_iterations", "2", "--seed", "0", "--prompt_batch_size", "2",
          "--output_file", str(out)])  # fmt: skip
    printed = capsys.readouterr().out
    assert printed.count("greedy (reward") == 3 and printed.count("AISP   (reward") == 3
    assert "mean reward over 3 prompts" in printed
    records = json.loads(out.read_text())
    assert len(records) == 3
    assert all(len(r["aisp"]["samples"]) == 4 and len(r["greedy"]["samples"]) == 1 for r in records)


def test_generate_reads_a_prompts_file_and_a_yaml_config(tiny_dir, tmp_path, capsys):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("the cat sat\n\na dog ran\n")
    config = tmp_path / "run.yaml"
    config.write_text(f"model_name_or_path: {tiny_dir}\nmax_new_tokens: 4\nsample_size: 2\nn_iterations: 1\n")
    main(["generate", "--config", str(config), "--prompts_file", str(prompts)])
    printed = capsys.readouterr().out
    assert "[1/2] the cat sat" in printed and "[2/2] a dog ran" in printed


def test_generate_without_subcommand_exits_with_usage(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and err.startswith("usage: aisp-trl [-h] [--debug] COMMAND") and "generate" in err


def test_help_names_the_program_and_lists_the_commands(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    out = capsys.readouterr().out
    assert exit_info.value.code == 0 and out.startswith("usage: aisp-trl")
    assert "commands:" in out and "generate  AISP next to plain greedy decoding" in out
    with pytest.raises(SystemExit) as exit_info:
        main(["generate", "--help"])
    out = capsys.readouterr().out
    assert exit_info.value.code == 0 and out.startswith("usage: aisp-trl generate [-h]") and "--sample_size" in out


def test_default_seed_is_fixed_and_printed(tiny_dir, tmp_path, capsys):
    assert make_parser().parse_args_and_config([])[1].seed == 0
    config = tmp_path / "run.yaml"
    config.write_text("seed: 7\n")
    assert make_parser().parse_args_and_config(["--config", str(config)])[1].seed == 7
    argv = ["generate", "--model_name_or_path", tiny_dir, "--num_prompts", "2", "--max_new_tokens", "4",
            "--sample_size", "2", "--n_iterations", "1"]  # fmt: skip
    main(argv)
    first = capsys.readouterr().out
    assert first.startswith("seed: 0 (--seed to change)") and "seed=0;" in first
    main(argv)
    assert capsys.readouterr().out.split("AISP took")[0] == first.split("AISP took")[0]  # the same responses


def _one_line_error(capsys, argv: list[str]) -> str:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert err.startswith("aisp-trl generate: error: ") and "(traceback: --debug or AISP_TRL_DEBUG=1)" in err
    return err


def test_user_errors_print_one_line_and_the_traceback_on_request(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("AISP_TRL_DEBUG", raising=False)
    missing = ["generate", "--model_name_or_path", "does/not/exist"]
    assert "`model_name_or_path` 'does/not/exist': folder not found" in _one_line_error(capsys, missing)
    with pytest.raises(FileNotFoundError, match="folder not found"):
        main([*missing, "--debug"])
    monkeypatch.setenv("AISP_TRL_DEBUG", "1")
    with pytest.raises(FileNotFoundError, match="folder not found"):
        main(missing)
    monkeypatch.delenv("AISP_TRL_DEBUG")
    # parse-time errors too
    assert "`max_new_tokens` must be >= 1, got 0" in _one_line_error(capsys, ["generate", "--max_new_tokens", "0"])


@pytest.mark.parametrize("name, content", [("empty.txt", ""), ("blank.txt", "\n   \n"), ("empty.jsonl", ""),
                                           ("empty.json", "[]")])  # fmt: skip
def test_an_empty_prompts_file_is_named_before_the_model_loads(tmp_path, capsys, name, content):
    path = tmp_path / name
    path.write_text(content)
    # the model does not exist: the prompts file is checked first
    err = _one_line_error(capsys, ["generate", "--prompts_file", str(path), "--model_name_or_path", "does/not/exist"])
    assert f"{str(path)!r} has no prompts" in err


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_a_missing_cuda_device_names_the_available_ones(capsys):
    err = _one_line_error(capsys, ["generate", "--device", "cuda", "--model_name_or_path", "does/not/exist"])
    assert "cuda requested but torch.cuda.is_available() is False; available: cpu" in err


def test_json_prompts_file(tiny_dir, tmp_path, capsys):
    path = tmp_path / "prompts.jsonl"
    path.write_text('{"prompt": "the cat sat"}\n{"prompt": "a dog ran"}\n')
    main(["generate", "--model_name_or_path", tiny_dir, "--prompts_file", str(path), "--max_new_tokens", "4",
          "--sample_size", "2", "--n_iterations", "1"])  # fmt: skip
    printed = capsys.readouterr().out
    assert "[1/2] the cat sat" in printed and "[2/2] a dog ran" in printed


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="`max_new_tokens` must be >= 1, got 0"):
        GenerateArguments(max_new_tokens=0)
    with pytest.raises(ValueError, match="`prompts_file` 'missing.txt' does not exist"):
        GenerateArguments(prompts_file="missing.txt")


@pytest.mark.slow
@pytest.mark.skipif(
    embedded_model_missing() is not None and not os.environ.get("CI"),
    reason=f"the embedded SmolLM2 is not installed here: {embedded_model_missing()}",
)
def test_generate_on_the_embedded_smollm2(smollm2, capsys):
    main(["generate", "--num_prompts", "2", "--max_new_tokens", "12", "--sample_size", "4", "--n_iterations", "2",
          "--seed", "0", "--prompt_batch_size", "2"])  # fmt: skip
    printed = capsys.readouterr().out
    assert printed.count("greedy (reward") == 2 and "mean reward over 2 prompts" in printed


# -- the README's "Use it" snippet ---------------------------------------------------------------------------------
def _use_it_snippet() -> str:
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = readme.split("## Use it", 1)[1]
    return section.split("```python\n", 1)[1].split("```", 1)[0]


def test_readme_use_it_snippet_prints_its_result_as_a_script():
    """Run as a script, a bare expression statement shows nothing: the snippet prints what it computes."""
    tree = ast.parse(_use_it_snippet())
    bare = [
        ast.unparse(node) for node in tree.body if isinstance(node, ast.Expr) and not isinstance(node.value, ast.Call)
    ]
    assert not bare, f"bare expressions print nothing when run as a script: {bare}"
    printed = [
        node for node in ast.walk(tree) if isinstance(node, ast.Call) and getattr(node.func, "id", "") == "print"
    ]
    assert "result.best.completion" in " ".join(ast.unparse(node) for node in printed)


@pytest.mark.slow
@pytest.mark.skipif(
    embedded_model_missing() is not None and not os.environ.get("CI"),
    reason=f"the embedded SmolLM2 is not installed here: {embedded_model_missing()}",
)
def test_readme_use_it_snippet_runs(tmp_path):
    script = tmp_path / "use_it.py"
    script.write_text(_use_it_snippet())
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "best (reward " in proc.stdout and "mean reward per iteration:" in proc.stdout
