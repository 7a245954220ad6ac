"""AISP generation in every process of an ``accelerate launch`` (used by tests/test_pipeline.py).

```bash
accelerate launch --multi_gpu --num_processes 2 --main_process_port 29511 \
    tests/scripts/two_process_generation.py MODEL_DIR OUTPUT_DIR PROMPTS_JSONL N_PROMPTS
```

Each process writes ``OUTPUT_DIR/result-{rank}.json``: the prompt ids of the records it got back and of the ones
it generated itself. ``gather_object`` is switched off: the records must come back from the shards on disk, not by
shipping every sample between processes.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _tiny import letter_reward  # noqa: E402

from aisp_trl import AISPConfig  # noqa: E402
from aisp_trl.data import load_prompts  # noqa: E402
from aisp_trl.models import load_model_and_tokenizer  # noqa: E402
from aisp_trl.pipeline import (  # noqa: E402
    default_state,
    generation,  # noqa: E402
    run_generation,
    shard_path,
)


def _no_gather(*args, **kwargs):
    raise AssertionError("run_generation gathered objects between processes; it must read the shards from disk")


def main(model_dir: str, output_dir: str, prompts_file: str, n_prompts: int) -> None:
    generation.gather_object = _no_gather
    state = default_state()  # gloo processes on a machine without GPU
    model, tokenizer = load_model_and_tokenizer(model_dir)
    prompts = load_prompts(prompts_file, max_prompts=n_prompts)
    config = AISPConfig(sample_size=4, n_iterations=2, prompt_batch_size=1, seed=0)
    records = run_generation(
        model, tokenizer, letter_reward(), prompts, config, output_dir, state, max_new_tokens=6, framing="none"
    )
    own = shard_path(output_dir, state.process_index)
    mine = [json.loads(line)["prompt_id"] for line in own.read_text().splitlines()] if own.is_file() else []
    result = {"num_processes": state.num_processes, "records": [r["prompt_id"] for r in records], "shard": mine}
    (Path(output_dir) / f"result-{state.process_index}.json").write_text(json.dumps(result))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]))
