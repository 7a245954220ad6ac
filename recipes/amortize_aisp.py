"""Amortize AISP into a pre-logit controller: run AISP on training prompts, fit ``u_t = f(z_t)`` on its results.

Steps: AISP over the training prompts with `save_means` (sharded, resumable; `aisp_trl.pipeline.run_generation`
stores each prompt's final mean U and the perturbation V of its best response, `(tau, d)`, in
`<output_dir>/aisp/shards/means-*.safetensors`) -> `(z_t, u_t)` pairs along the responses those perturbations decode
(`aisp_trl.controllers.controller_pairs`) -> a small MLP fitted by mean squared error with early stopping on held-out
training prompts (`aisp_trl.controllers.fit_controller`) -> `<output_dir>/controller.safetensors` (with the training
record and its cost in the metadata) and `report.json`. `aisp_trl.controllers.AmortizedSampler` then decodes
greedily with `z_t + u_t`: one decode, no reward calls (`recipes/compare.py --methods amortized ...`).

```bash
# the embedded SmolLM2-135M-Instruct, VADER, AISP (N = 8 x 4) on 64 'general:train' prompts (~10 min on 2 CPU cores)
python recipes/amortize_aisp.py --config recipes/configs/amortize_smollm2.yaml

# several processes: the AISP generation is sharded (the fit runs on the main process)
accelerate launch --multi_gpu --num_processes 2 recipes/amortize_aisp.py --config recipes/configs/amortize_smollm2.yaml

# resumable in pieces: a later run with a larger --max_prompts reuses the records on disk
python recipes/amortize_aisp.py --config recipes/configs/amortize_smollm2.yaml --max_prompts 32
```

Run the commands with the virtual environment active (`. .venv/bin/activate`) or as `.venv/bin/python ...`. Bad
input prints one line and exits with status 2; set `AISP_TRL_DEBUG=1` for the traceback.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from aisp_trl.controllers import ControllerConfig, controller_pairs, fit_controller, save_module
from aisp_trl.pipeline import AISPGenerationArguments, generate_for_training, load_means


@dataclass
class AmortizeScriptArguments:
    """Where the run goes and which model it amortizes."""

    output_dir: str = field(default="outputs/amortize", metadata={"help": "Controller, report and AISP records."})
    model_name_or_path: str | None = field(
        default=None, metadata={"help": "Causal LM (default: the embedded SmolLM2-135M-Instruct)."}
    )
    dtype: str | None = field(default=None, metadata={"help": "Model dtype (default: float32)."})


def make_parser(subparsers=None, prog: str | None = None):
    from trl import TrlParser

    dataclass_types = (AmortizeScriptArguments, AISPGenerationArguments, ControllerConfig)
    if subparsers is not None:
        return subparsers.add_parser(
            "amortize", help="amortize AISP into a controller", dataclass_types=dataclass_types
        )
    return TrlParser(dataclass_types, prog=prog)


def main(
    script_args: AmortizeScriptArguments, generation_args: AISPGenerationArguments, controller_config: ControllerConfig
) -> dict:
    """Runs (or resumes) AISP with stored means, fits the controller, saves it; returns the report."""
    generation_args.save_means = True  # the controller's targets
    output_dir = Path(script_args.output_dir)
    run = generate_for_training(generation_args, script_args.model_name_or_path, script_args.dtype, output_dir)
    report: dict = {}
    if run.state.is_main_process:
        start = time.perf_counter()
        pairs = controller_pairs(
            run.model, run.records, load_means(run.generation_dir), controller_config.target, run.tokenizer.pad_token_id
        )
        pairs_seconds = time.perf_counter() - start
        controller, record = fit_controller(pairs, controller_config)
        seconds = [r.get("seconds") for r in run.records]
        aisp_seconds = sum(seconds) if all(isinstance(s, float) for s in seconds) else None
        info = {
            **record,
            "model": run.model_name,
            "reward": generation_args.reward,
            "aisp_seconds": aisp_seconds,
            "pairs_seconds": pairs_seconds,
            "training_seconds": (aisp_seconds or 0.0) + pairs_seconds + record["train_seconds"],
            "aisp_reward_mean": sum(r["best"]["reward"] for r in run.records) / len(run.records),
            "greedy_reward_mean": sum(r["greedy"]["reward"] for r in run.records) / len(run.records),
            "generation": generation_args.run_info(),
        }
        path = save_module(controller, output_dir / "controller.safetensors", info)
        report = {k: v for k, v in info.items() if k not in ("train_losses", "val_losses")}
        (output_dir / "report.json").write_text(json.dumps(report, indent=2, default=str))
        print(
            f"controller on {record['num_pairs']} (z, u) pairs of {record['num_prompts']} prompts: validation R^2 "
            f"{record['val_r2']:.3f} at epoch {record['best_epoch']}; AISP best reward {info['aisp_reward_mean']:.3f} "
            f"vs greedy {info['greedy_reward_mean']:.3f} on the training prompts; training cost "
            f"{info['training_seconds']:.0f} s (AISP {aisp_seconds or 0.0:.0f} s, fit {record['train_seconds']:.0f} s)"
        )
        print(f"wrote {path} and {output_dir / 'report.json'}")
        report["controller"] = str(path)
        report["config"] = asdict(controller_config)
    run.state.wait_for_everyone()
    return report


if __name__ == "__main__":
    from aisp_trl.cli import one_line_errors

    with one_line_errors("amortize_aisp.py"):  # bad input: one line on stderr, exit 2 (AISP_TRL_DEBUG=1: traceback)
        main(*make_parser().parse_args_and_config())
