"""``benchmarks/bench_gpu.py``: the CPU dry run at a tiny shape, without the optional stack, and its arguments."""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path

import pytest
import torch
from _blocker import ROOT, run_blocked

SCRIPT = ROOT / "benchmarks" / "bench_gpu.py"
CASES = {
    "aisp_iteration": 4,
    "greedy_generate": 4,
    "decoder_greedy": 4,
    "bon_iteration": 4,
    "aisp_host_only": 4,
    "batched_aisp_iteration": 8,
    "batched_greedy_generate": 8,
}
RATIOS = {
    "aisp_iteration / greedy_generate",
    "aisp_iteration / decoder_greedy",
    "aisp_iteration / bon_iteration",
    "bon_iteration / greedy_generate",
    "aisp_host_only / greedy_generate",
    "batched_aisp_iteration / batched_greedy_generate",
}


def _module():
    if "bench_gpu" in sys.modules:
        return sys.modules["bench_gpu"]
    spec = importlib.util.spec_from_file_location("bench_gpu", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_gpu"] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_tiny_cpu_dry_run_without_trl_datasets_or_vllm(tmp_path: Path):
    # what travels to the GPU machine: the script and the package source, run with PYTHONPATH=. and no registry
    output = tmp_path / "bench_gpu.json"
    args = ["--tiny", "--device", "cpu", "--repeats", "2", "--max_batch_rows", "3", "--output", str(output)]
    proc = run_blocked(
        f"import runpy\nsys.argv = ['bench_gpu.py', *{args!r}]\n"
        f"runpy.run_path({str(SCRIPT)!r}, run_name='__main__')\nprint('leaked', leaked())"
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "leaked []" in proc.stdout
    assert "| aisp_iteration | 4 |" in proc.stdout and "| aisp_iteration / greedy_generate |" in proc.stdout
    result = json.loads(output.read_text())
    assert result["rows"] == CASES
    assert set(result["seconds"]) == set(CASES) and all(len(runs) == 2 for runs in result["seconds"].values())
    assert all(t > 0 for runs in result["seconds"].values() for t in runs)
    assert set(result["ratios"]) == RATIOS
    assert all(math.isfinite(v) and v > 0 for v in result["ratios"].values()), result["ratios"]
    assert result["fixed_length"] is True  # no EOS: every row of every case decoded exactly tau tokens
    assert result["peak_memory_bytes"] == dict.fromkeys(CASES)  # CPU: no CUDA allocator to ask
    assert set(result["targets"].values()) == {None}  # the targets are for the 8B shape on a GPU
    settings = result["settings"]
    assert settings["tiny"] and settings["device"] == "cpu" and settings["dtype"] == "float32"
    assert settings["max_batch_rows"] == 3 and settings["sample_size"] == 4 and settings["max_new_tokens"] == 8
    assert result["prompt_lengths"] == [24, 16]


def test_default_shape_is_llama_3_8b():
    # built on the meta device: the parameter count of Meta-Llama-3-8B, nothing allocated
    bench = _module()
    settings = bench.resolve(bench.make_parser().parse_args(["--device", "meta"]))
    assert (settings.sample_size, settings.max_new_tokens, settings.prompt_batch_size) == (32, 128, 4)
    assert settings.dtype == "bfloat16" and settings.prompt_length == 300
    model = bench.build_model(settings)
    assert sum(p.numel() for p in model.parameters()) == 8_030_261_248
    assert next(model.parameters()).dtype == torch.bfloat16
    assert model.generation_config.eos_token_id is None


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--tiny", "--sample_size", "0"], "`--sample_size` must be >= 1, got 0"),
        (["--tiny", "--prompt_length", "9"], "raise it to at least 10"),
        (["--tiny", "--dtype", "int8"], "`--dtype int8` is not one of"),
        (["--tiny", "--num_key_value_heads", "3"], "multiple of `--num_key_value_heads` 3"),
    ],
)
def test_bad_arguments_are_one_line_errors(capsys, argv, message):
    bench = _module()
    with pytest.raises(SystemExit) as exit_info:
        bench.main([*argv, "--device", "cpu"])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err
