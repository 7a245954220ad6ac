"""`aisp-trl generate`: end to end on a tiny saved model (fast) and on the embedded SmolLM2 (slow)."""

import json

import pytest
from _tiny import make_model, make_tokenizer

from aisp_trl.cli import GenerateArguments, main


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
    assert exit_info.value.code == 2 and "usage: aisp-trl generate" in capsys.readouterr().err


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="`max_new_tokens` must be >= 1, got 0"):
        GenerateArguments(max_new_tokens=0)
    with pytest.raises(ValueError, match="`prompts_file` 'missing.txt' does not exist"):
        GenerateArguments(prompts_file="missing.txt")


@pytest.mark.slow
def test_generate_on_the_embedded_smollm2(smollm2, capsys):
    main(["generate", "--num_prompts", "2", "--max_new_tokens", "12", "--sample_size", "4", "--n_iterations", "2",
          "--seed", "0", "--prompt_batch_size", "2"])  # fmt: skip
    printed = capsys.readouterr().out
    assert printed.count("greedy (reward") == 2 and "mean reward over 2 prompts" in printed
