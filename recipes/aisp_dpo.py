"""Preference-tune on AISP samples: generate with AISP, build chosen/rejected pairs, train with trl's `DPOTrainer`.

Steps: AISP over the training prompts (sharded, resumable; `aisp_trl.pipeline.run_generation`) -> preference pairs
with AISP's best sample as `chosen` and the worst sample, the base model's greedy response or a random sample as
`rejected` (`--rejected`; `aisp_trl.data.build_preference_dataset`, saved with a dataset card) -> `DPOTrainer`
(any `--loss_type`; LoRA with `--use_peft`, else a frozen copy of the model is the reference) -> greedy reward of
the base and the tuned model on held-out prompts, next to the AISP reward -> `report.json` and `report.md`.

```bash
# the embedded SmolLM2-135M-Instruct, VADER sentiment reward, a few minutes on 2 CPU cores
python recipes/aisp_dpo.py --config recipes/configs/dpo_smollm2.yaml

# several processes (sharded generation, DDP), IPO loss, greedy responses as rejected
accelerate launch --multi_gpu --num_processes 2 recipes/aisp_dpo.py --config recipes/configs/dpo_smollm2.yaml \
    --loss_type ipo --rejected greedy
```

Run the commands from the repository with the virtual environment active (`. .venv/bin/activate`), or call
`.venv/bin/python` / `.venv/bin/accelerate`.

Reruns: generation resumes from `<output_dir>/aisp` (the same model, dtype, reward and AISP settings, else an error
says what differs). A rerun of a finished command does not train again: `<output_dir>` holds `aisp_training.json`
(written with the report), so it says so, keeps the trained model and returns the stored report. Pass
`--overwrite_output_dir true` to train again (the AISP records are reused; the model and report are overwritten), or
a new `--output_dir`. Bad input (a missing model folder, an empty prompt file, ...) prints one line and exits with
status 2; set `AISP_TRL_DEBUG=1` for the traceback.
"""

from __future__ import annotations

import argparse

from aisp_trl.data import build_preference_dataset
from aisp_trl.pipeline import AISPGenerationArguments, finished_training, generate_for_training
from aisp_trl.training import train_dpo


def main(script_args: AISPGenerationArguments, training_args, model_args) -> dict:
    """Runs generation, DPO and evaluation; returns the report (also written to ``training_args.output_dir``)."""
    from accelerate import PartialState
    from trl import get_peft_config

    previous = finished_training(training_args.output_dir, script_args.overwrite_output_dir, PartialState())
    if previous is not None:  # a rerun of a finished command: say so and keep the trained model
        return previous
    run = generate_for_training(script_args, model_args.model_name_or_path, model_args.dtype, training_args.output_dir)
    dataset = build_preference_dataset(
        run.records,
        rejected=script_args.rejected,
        dataset_format=script_args.resolved_dataset_format(run.tokenizer),
        drop_nonpositive_margin=script_args.drop_nonpositive_margin,
        seed=script_args.aisp_seed or 0,
    )
    if len(dataset) == 0:
        raise ValueError(
            f"no preference pair has a positive reward margin (rejected={script_args.rejected!r}, "
            f"{len(run.records)} prompts); raise `sample_size` / `n_iterations`, use another `rejected`, or set "
            "`drop_nonpositive_margin` to false."
        )
    counts = {
        "prompts": len(run.records),
        "pairs": len(dataset),
        "dropped_nonpositive_margin": len(run.records) - len(dataset),
    }
    run.save(dataset, "preference_dataset", kind="preference", counts=counts)
    base_eval = run.evaluate(run.model)

    # With LoRA the adapters are switched off for the reference; otherwise a frozen copy (DESIGN section 5)
    outcome = train_dpo(run.model, run.tokenizer, dataset, training_args, get_peft_config(model_args))
    outcome.trainer.save_model(training_args.output_dir)
    return run.finish(
        training_args.output_dir,
        method=f"DPO ({', '.join(training_args.loss_type)}) on AISP preference pairs "
        f"(chosen = best, rejected = {script_args.rejected})",
        trained="DPO",
        base_eval=base_eval,
        trained_eval=run.evaluate(outcome.model),
        counts={"pairs": len(dataset)},
        training=outcome.summary(),
        title="AISP + DPO report",
    )


def make_parser(subparsers: argparse._SubParsersAction | None = None, prog: str | None = None):
    from trl import DPOConfig, ModelConfig, TrlParser

    dataclass_types = (AISPGenerationArguments, DPOConfig, ModelConfig)
    if subparsers is not None:
        return subparsers.add_parser("aisp-dpo", help="DPO on AISP preference pairs", dataclass_types=dataclass_types)
    return TrlParser(dataclass_types, prog=prog)


if __name__ == "__main__":
    from aisp_trl.cli import one_line_errors

    with one_line_errors("aisp_dpo.py"):  # bad input: one line on stderr, exit 2 (AISP_TRL_DEBUG=1: traceback)
        parser = make_parser()
        script_args, training_args, model_args = parser.parse_args_and_config()
        main(script_args, training_args, model_args)
