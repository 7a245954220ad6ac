"""Train RE-Control's value function (Kong et al., NeurIPS 2024) on sampled base-model responses.

Steps: ``samples_per_prompt`` responses per training prompt, sampled from the base model (temperature 0.7, top-k
50, top-p 0.95 as in the authors' code) and scored by the reward -> their pre-logits ``z_t`` through the capture
hook -> a value MLP ``V(z)`` fitted with the authors' objective (``V(z_T) = r``, ``V(z_t) = V(z_{t+1})``;
`aisp_trl.samplers.train_re_control`) -> `<output_dir>/value_model.safetensors` (the training record and its
cost in the metadata) and `report.json`. `aisp_trl.samplers.REControlSampler` then decodes greedily with
``n_steps`` gradient-ascent steps on ``z_t`` per token (`recipes/compare.py --methods re_control ...`).

```bash
# the embedded SmolLM2-135M-Instruct, VADER, 64 'general:train' prompts x 8 samples (~5 min on 2 CPU cores)
python recipes/re_control.py --config recipes/configs/re_control_smollm2.yaml
```

Run the commands with the virtual environment active (`. .venv/bin/activate`) or as `.venv/bin/python ...`. Bad
input prints one line and exits with status 2; set `AISP_TRL_DEBUG=1` for the traceback.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from aisp_trl.controllers import REControlConfig, save_module
from aisp_trl.pipeline.arguments import ModelArguments, RewardArguments
from aisp_trl.samplers import train_re_control


@dataclass
class REControlScriptArguments(ModelArguments, RewardArguments):
    """Model, prompts, reward and output of the value-model training (the horizon is `REControlConfig`'s)."""

    output_dir: str = field(default="outputs/re-control", metadata={"help": "Value model and report."})
    prompt_source: str = field(
        default="general:train",
        metadata={"help": "Training prompts: 'general:train' (keep evaluation prompts out), a file or a dataset."},
    )
    prompt_split: str = field(default="train", metadata={"help": "Split of a dataset prompt source."})
    max_prompts: int = field(default=64, metadata={"help": "How many training prompts (the first ones)."})
    framing: str = field(default="auto", metadata={"help": "auto, chat_template, user, human or none."})
    num_threads: int | None = field(default=None, metadata={"help": "torch.set_num_threads (default: torch's)."})

    def __post_init__(self) -> None:
        super().__post_init__()  # the model and reward fields
        if isinstance(self.max_prompts, bool) or not isinstance(self.max_prompts, int) or self.max_prompts < 1:
            raise ValueError(f"`max_prompts` must be an integer >= 1, got {self.max_prompts!r}.")


def make_parser(subparsers=None, prog: str | None = None):
    from trl import TrlParser

    dataclass_types = (REControlScriptArguments, REControlConfig)
    if subparsers is not None:
        return subparsers.add_parser(
            "re-control", help="train a RE-Control value model", dataclass_types=dataclass_types
        )
    return TrlParser(dataclass_types, prog=prog)


def main(script_args: REControlScriptArguments, config: REControlConfig) -> dict:
    """Collects the value data, trains and saves the value model; returns the report."""
    import torch

    from aisp_trl.data import load_prompts, prompt_text
    from aisp_trl.models import EMBEDDED_MODEL, load_model_and_tokenizer
    from aisp_trl.pipeline import tokenize_prompts
    from aisp_trl.rewards import build_reward

    if script_args.num_threads is not None:
        torch.set_num_threads(script_args.num_threads)
    prompts = load_prompts(
        script_args.prompt_source, split=script_args.prompt_split, max_prompts=script_args.max_prompts
    )
    if not prompts:
        raise ValueError(f"`prompt_source` {script_args.prompt_source!r} gave no prompts; point it at a non-empty one.")
    device = script_args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    model_name = script_args.model_name_or_path or EMBEDDED_MODEL
    model, tokenizer = load_model_and_tokenizer(model_name, dtype=script_args.dtype, device=device)
    reward = build_reward(script_args.reward, device=device, max_length=script_args.reward_max_length)
    _, queries = tokenize_prompts(tokenizer, prompts, framing=script_args.framing)
    value, record = train_re_control(model, tokenizer, reward, queries, [prompt_text(p) for p in prompts], config)
    info = {
        **record,
        "model": model_name,
        "reward": script_args.reward,
        "prompt_source": script_args.prompt_source,
        "training_seconds": record["collect_seconds"] + record["train_seconds"],
    }
    output_dir = Path(script_args.output_dir)
    path = save_module(value, output_dir / "value_model.safetensors", info)
    report = {k: v for k, v in info.items() if k != "losses"} | {"final_loss": record["losses"][-1]}
    (output_dir / "report.json").write_text(json.dumps(report, indent=2, default=str))
    print(
        f"value model on {record['num_trajectories']} responses ({record['num_states']} states) of "
        f"{record['num_prompts']} prompts: loss {record['losses'][0]:.4f} -> {record['losses'][-1]:.4f}; cost "
        f"{info['training_seconds']:.0f} s (sampling {record['collect_seconds']:.0f} s, "
        f"fit {record['train_seconds']:.0f} s)"
    )
    print(f"wrote {path} and {output_dir / 'report.json'}")
    return report | {"value_model": str(path), "settings": asdict(config)}


if __name__ == "__main__":
    from aisp_trl.cli import one_line_errors

    with one_line_errors("re_control.py"):  # bad input: one line on stderr, exit 2 (AISP_TRL_DEBUG=1: traceback)
        main(*make_parser().parse_args_and_config())
