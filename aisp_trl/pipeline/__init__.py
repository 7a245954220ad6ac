"""The recipes' machinery, one concern per module:

- `arguments`: the argument dataclasses (a shared base for the model / reward / prompt fields, and
  `AISPGenerationArguments`);
- `records`: what a generation run leaves on disk (shards, means, run identity) and the resume checks;
- `generation`: `run_generation` (sharded, resumable AISP or best-of-N over a prompt set) and `evaluate_greedy`;
- `recipe`: the fine-tuning recipes' shared first half (`generate_for_training`), the vLLM engine's lifecycle and the
  finished-training marker;
- `compare`: methods side by side at the same budget (`recipes/compare.py`).
"""

from .arguments import GENERATION_METHODS, AISPGenerationArguments, ModelArguments, PromptArguments, RewardArguments
from .generation import (
    default_state,
    evaluate_greedy,
    greedy_records,
    run_generation,
    summarize_records,
    tokenize_prompts,
)
from .recipe import (
    TRAINING_MARKER,
    AISPRun,
    finished_training,
    free_llm,
    generate_for_training,
    load_vllm_engine,
    mark_training_finished,
)
from .records import RECORDS_FILE, RUN_FILE, SHARD_DIR, load_means, load_records, means_path, run_identity, shard_path

__all__ = [
    "GENERATION_METHODS",
    "RECORDS_FILE",
    "RUN_FILE",
    "SHARD_DIR",
    "TRAINING_MARKER",
    "AISPGenerationArguments",
    "AISPRun",
    "ModelArguments",
    "PromptArguments",
    "RewardArguments",
    "default_state",
    "evaluate_greedy",
    "finished_training",
    "free_llm",
    "generate_for_training",
    "greedy_records",
    "load_means",
    "load_records",
    "load_vllm_engine",
    "mark_training_finished",
    "means_path",
    "run_generation",
    "run_identity",
    "shard_path",
    "summarize_records",
    "tokenize_prompts",
]
