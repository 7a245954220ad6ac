"""Distil AISP into a model: generate with AISP, fine-tune on the best samples with trl's `SFTTrainer`, evaluate.

Steps: AISP over the training prompts (sharded, resumable; `aisp_trl.pipeline.run_generation`) -> an SFT dataset
of each prompt's best sample (`aisp_trl.data.build_sft_dataset`, saved with a dataset card) -> `SFTTrainer`
(LoRA with `--use_peft`) -> greedy reward of the base and the distilled model on held-out prompts, next to the
AISP reward the data came from -> `report.json` and `report.md` in `--output_dir`.

```bash
# the embedded SmolLM2-135M-Instruct, VADER sentiment reward, a few minutes on 2 CPU cores
python recipes/distill_aisp.py --config recipes/configs/distill_smollm2.yaml

# several processes: generation and evaluation are sharded, training is DDP (without a GPU the preset's
# `use_cpu: true` makes these gloo processes)
accelerate launch --multi_gpu --num_processes 2 recipes/distill_aisp.py --config recipes/configs/distill_smollm2.yaml

# any causal LM and a sequence-classification reward model, HH-RLHF prompts
python recipes/distill_aisp.py --config recipes/configs/distill_smollm2.yaml \
    --model_name_or_path meta-llama/Meta-Llama-3-8B --framing user \
    --prompt_source Anthropic/hh-rlhf --prompt_split test --prompt_shuffle_seed 0 \
    --reward OpenAssistant/reward-model-deberta-v3-large-v2 --output_dir llama3-aisp-sft
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

from aisp_trl.data import build_sft_dataset
from aisp_trl.pipeline import AISPGenerationArguments, finished_training, generate_for_training
from aisp_trl.training import train_sft


def main(script_args: AISPGenerationArguments, training_args, model_args) -> dict:
    """Runs generation, SFT and evaluation; returns the report (also written to ``training_args.output_dir``)."""
    from accelerate import PartialState
    from trl import get_peft_config

    previous = finished_training(training_args.output_dir, script_args.overwrite_output_dir, PartialState())
    if previous is not None:  # a rerun of a finished command: say so and keep the trained model
        return previous
    run = generate_for_training(script_args, model_args.model_name_or_path, model_args.dtype, training_args.output_dir)
    dataset = build_sft_dataset(run.records, script_args.resolved_dataset_format(run.tokenizer))
    run.save(dataset, "sft_dataset", kind="sft", counts={"prompts": len(run.records), "rows": len(dataset)})
    base_eval = run.evaluate(run.model)

    outcome = train_sft(run.model, run.tokenizer, dataset, training_args, get_peft_config(model_args))
    outcome.trainer.save_model(training_args.output_dir)
    return run.finish(
        training_args.output_dir,
        method="AISP distillation (SFT on AISP's best samples)",
        trained="distilled",
        base_eval=base_eval,
        trained_eval=run.evaluate(outcome.model),
        counts={"sft_rows": len(dataset)},
        training=outcome.summary(),
        title="AISP distillation report",
    )


def make_parser(subparsers: argparse._SubParsersAction | None = None, prog: str | None = None):
    from trl import ModelConfig, SFTConfig, TrlParser

    dataclass_types = (AISPGenerationArguments, SFTConfig, ModelConfig)
    if subparsers is not None:
        return subparsers.add_parser("distill-aisp", help="Distil AISP with SFT", dataclass_types=dataclass_types)
    return TrlParser(dataclass_types, prog=prog)


if __name__ == "__main__":
    from aisp_trl.cli import one_line_errors

    with one_line_errors("distill_aisp.py"):  # bad input: one line on stderr, exit 2 (AISP_TRL_DEBUG=1: traceback)
        parser = make_parser()
        script_args, training_args, model_args = parser.parse_args_and_config()
        main(script_args, training_args, model_args)
