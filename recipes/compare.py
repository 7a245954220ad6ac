"""Compare AISP with its baselines at the same sample budget: rewards, Fig. 3 curves, diversity, coherence, KL, time.

Runs the chosen methods (`aisp`, `bon_top_p`, `bon_gaussian`, `args`, `greedy`, and the trained `re_control` and
`amortized`, whose training cost is reported beside their decode cost) on a prompt set, every best-of-n
baseline with ``N = n * kappa`` samples per prompt, and writes to ``--output_dir``: ``results.json`` (per method and
prompt: best reward, best text, seconds; summaries; AISP's paired win rates; curves), ``results.md`` (the table) and
``curves.png`` (the paper's Fig. 3: AISP mean / best at k and best so far, BoN best of N = n·k). The logic lives in
`aisp_trl.pipeline.compare`.

```bash
# the embedded SmolLM2-135M-Instruct, VADER sentiment, 16 built-in prompts (about 15 min on 2 idle CPU cores)
python recipes/compare.py --config recipes/configs/compare_smollm2.yaml
python recipes/compare.py --config recipes/configs/compare_smollm2.yaml --num_threads 1  # on a busy shared CPU

# a reward that does not saturate: MiniLM relevance of the completion to the prompt, or the average with VADER
python recipes/compare.py --config recipes/configs/compare_smollm2.yaml --reward vader+relevance --lam 0.05

# fewer methods, your own model and reward model
python recipes/compare.py --config recipes/configs/compare_smollm2.yaml --methods aisp bon_top_p \
    --model_name_or_path Qwen/Qwen2.5-0.5B-Instruct --reward OpenAssistant/reward-model-deberta-v3-large-v2

# trained methods: RE-Control's value model and the amortized AISP controller, fitted on 'general:train' prompts
python recipes/re_control.py --config recipes/configs/re_control_smollm2.yaml
python recipes/amortize_aisp.py --config recipes/configs/amortize_smollm2.yaml
python recipes/compare.py --config recipes/configs/compare_controllers_smollm2.yaml
```

Run the commands with the virtual environment active (`. .venv/bin/activate`) or as `.venv/bin/python ...`. Bad
input prints one line and exits with status 2; set `AISP_TRL_DEBUG=1` for the traceback.
"""

from __future__ import annotations

from aisp_trl.config import AISPConfig
from aisp_trl.pipeline.compare import CompareArguments, run_comparison, write_outputs


def make_parser(subparsers=None, prog: str | None = None):
    from trl import TrlParser

    dataclass_types = (CompareArguments, AISPConfig)
    if subparsers is not None:
        return subparsers.add_parser("compare", help="AISP vs baselines", dataclass_types=dataclass_types)
    return TrlParser(dataclass_types, prog=prog)


def main(script_args: CompareArguments, aisp_config: AISPConfig) -> dict:
    """Runs the comparison, writes results.json / results.md / curves.png, prints the table; returns the report."""
    if script_args.num_threads is not None:
        import torch

        torch.set_num_threads(script_args.num_threads)
    report = run_comparison(script_args, aisp_config)
    files = write_outputs(report, script_args.output_dir, plot=script_args.plot)
    print(files["markdown"].read_text())
    print("wrote " + ", ".join(str(path) for path in files.values()))
    return report


if __name__ == "__main__":
    from aisp_trl.cli import one_line_errors

    with one_line_errors("compare.py"):  # bad input: one line on stderr, exit 2 (AISP_TRL_DEBUG=1: traceback)
        parser = make_parser()
        script_args, aisp_config = parser.parse_args_and_config()
        main(script_args, aisp_config)
