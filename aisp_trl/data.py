"""Prompts in, trl datasets out.

Prompt side:

- [`load_prompt_dataset`] reads prompts from the built-in set, a JSON/JSONL file, a folder saved with
  ``Dataset.save_to_disk`` or a Hugging Face dataset, and returns a `datasets.Dataset` with a ``prompt`` column:
  plain strings, or conversations (lists of ``{"role", "content"}`` messages ending with a user turn).
- HH-RLHF and SHP rows are prepared as in the paper's App. C.3 ([`hh_rlhf_prompt`], [`shp_prompt`]): the final
  assistant response is removed and the dialogue kept; SHP's prompt is the post (``history``).
- [`render_prompt`] frames a prompt for the model: the tokenizer's chat template, or the paper's begin / finish
  words (``"User:"`` for Llama and Gemma, ``"Human:"`` for Vicuna, then ``"Assistant:"``).

Dataset side, from the per-prompt records the generation pipeline writes (``AISPResult.to_dict()`` plus
``prompt_id``, ``prompt_input`` (the prompt as loaded), ``query`` (the text the model saw) and ``greedy``):

- [`build_sft_dataset`]: ``{"prompt", "completion"}`` from each prompt's best sample;
- [`build_preference_dataset`]: ``{"prompt", "chosen", "rejected"}`` with the best sample as ``chosen`` and the
  worst, the base model's greedy response or a random sample as ``rejected``;
- [`save_dataset`]: ``save_to_disk`` + parquet + a dataset card, optionally ``push_to_hub``.
"""

from __future__ import annotations

import json
import math
import random
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from datasets import Dataset, load_dataset, load_from_disk

from .prompts import PROMPT_SPLITS

Message = dict[str, str]
Prompt = str | list[Message]

BUILTIN = "builtin"
"""Prompt source name that selects the built-in prompts of `aisp_trl.prompts`."""
GENERAL = "general"
"""Prompt source name that selects `aisp_trl.prompts.GENERAL_PROMPTS`; ``"general:<split>"`` selects one split of
[`aisp_trl.prompts.prompt_split`] (``train``, ``held_out``, ``tune``, ``bench``, ``fresh``)."""
GENERAL_SOURCES = (GENERAL, *(f"{GENERAL}:{name}" for name in PROMPT_SPLITS))
"""Every prompt source name backed by `GENERAL_PROMPTS`."""

PREPROCESSINGS = ("auto", "hh-rlhf", "shp", "none")
FRAMINGS = ("auto", "chat_template", "user", "human", "none")
FRAMING_WORDS: dict[str, tuple[str, str]] = {"user": ("User:", "Assistant:"), "human": ("Human:", "Assistant:")}
"""Begin and finish words of the paper's App. C.3 framing (``"Human"`` for Vicuna, ``"User:"`` otherwise)."""
MODEL_FAMILY_FRAMING: dict[str, str] = {"llama": "user", "gemma": "user", "vicuna": "human"}
"""The framing App. C.3 used per model family."""
REJECTED_CHOICES = ("worst", "greedy", "random")
DATASET_FORMATS = ("standard", "conversational")

_HH_TURN = re.compile(r"\n\n(Human|Assistant):")


# -- prompt preparation (paper App. C.3) ----------------------------------------------------------------------
def parse_hh_dialogue(text: str) -> list[Message]:
    """Splits an HH-RLHF transcript ``"\\n\\nHuman: ...\\n\\nAssistant: ..."`` into messages.

    Args:
        text (`str`): a ``chosen`` or ``rejected`` string of Anthropic's HH-RLHF.

    Returns:
        `list[dict[str, str]]`: ``{"role": "user" | "assistant", "content": ...}`` in order.

    Raises:
        ValueError: when the text holds no ``Human:`` / ``Assistant:`` turn.
    """
    if not text.startswith("\n\n"):
        text = "\n\n" + text
    parts = _HH_TURN.split(text)
    if len(parts) < 3:
        raise ValueError(
            f"not an HH-RLHF transcript (no '\\n\\nHuman:' / '\\n\\nAssistant:' turn): {text[:80]!r}; pass the "
            "`chosen` or `rejected` column of Anthropic/hh-rlhf, or set `prompt_preprocessing='none'`."
        )
    messages = []
    for speaker, content in zip(parts[1::2], parts[2::2], strict=True):
        role = "user" if speaker == "Human" else "assistant"
        messages.append({"role": role, "content": content.strip()})
    return messages


def hh_rlhf_prompt(row: Mapping[str, Any]) -> list[Message]:
    """The prompt of an HH-RLHF row: the dialogue of ``chosen`` without its final assistant response (App. C.3).

    Args:
        row (`Mapping`): a row with the dataset's ``chosen`` (and ``rejected``) strings.

    Returns:
        `list[dict[str, str]]`: the dialogue, ending with the last human turn.
    """
    messages = parse_hh_dialogue(row["chosen"])
    return drop_final_assistant(messages, where="HH-RLHF `chosen`")


def shp_prompt(row: Mapping[str, Any]) -> str:
    """The prompt of an SHP row: the post (``history``); the ``human_ref_*`` responses are dropped (App. C.3)."""
    return str(row["history"]).strip()


def drop_final_assistant(messages: Sequence[Mapping[str, Any]], where: str = "prompt") -> list[Message]:
    """Keeps all turns but a final assistant one; the rest must end with a user turn.

    Raises:
        ValueError: an empty conversation, or one that does not end with a user turn once trimmed.
    """
    turns = [{"role": str(m["role"]), "content": str(m["content"])} for m in messages]
    if turns and turns[-1]["role"] == "assistant":
        turns = turns[:-1]
    if not turns or turns[-1]["role"] != "user":
        raise ValueError(
            f"{where}: the conversation must end with a user turn once the final assistant response is removed, "
            f"got roles {[m['role'] for m in messages]!r}; give prompts that end with a user message."
        )
    return turns


def detect_preprocessing(column_names: Iterable[str]) -> str:
    """``"hh-rlhf"`` for ``chosen``/``rejected`` columns, ``"shp"`` for ``history``/``human_ref_A``, else ``"none"``."""
    names = set(column_names)
    if {"chosen", "rejected"} <= names and "prompt" not in names:
        return "hh-rlhf"
    if {"history", "human_ref_A"} <= names:
        return "shp"
    return "none"


def extract_prompt(row: Mapping[str, Any], preprocessing: str = "none", prompt_column: str = "prompt") -> Prompt:
    """One row's prompt: HH-RLHF / SHP preparation, or a ``prompt_column`` / ``messages`` column.

    A conversational column (list of ``{"role", "content"}``) keeps all turns but a final assistant one.
    """
    if preprocessing == "hh-rlhf":
        return hh_rlhf_prompt(row)
    if preprocessing == "shp":
        return shp_prompt(row)
    for column in (prompt_column, "messages"):
        if column in row and row[column] is not None:
            value = row[column]
            if isinstance(value, str):
                return value
            if isinstance(value, list) and value and isinstance(value[0], Mapping):
                return drop_final_assistant(value, where=f"column `{column}`")
            raise ValueError(
                f"column `{column}` holds {type(value).__name__} ({value!r:.80}); expected a string or a list of "
                "{'role', 'content'} messages."
            )
    raise ValueError(
        f"row has no `{prompt_column}` or `messages` column (columns: {sorted(row)}); set `prompt_column`, or "
        "`prompt_preprocessing` to 'hh-rlhf' / 'shp'."
    )


def load_prompt_dataset(
    source: str = BUILTIN,
    *,
    config: str | None = None,
    split: str = "train",
    prompt_column: str = "prompt",
    preprocessing: str = "auto",
    max_prompts: int | None = None,
    shuffle_seed: int | None = None,
) -> Dataset:
    """Loads prompts into a `Dataset` with a single ``prompt`` column.

    Args:
        source (`str`, defaults to `"builtin"`): ``"builtin"`` (the prompts of `aisp_trl.prompts`), ``"general"``
            (`aisp_trl.prompts.GENERAL_PROMPTS`) or ``"general:train"`` / ``"general:held_out"`` /
            ``"general:tune"`` / ``"general:bench"`` (its fixed splits, see `prompt_split`), a ``.json`` /
            ``.jsonl`` file, a folder saved with ``save_to_disk``, or a Hugging Face dataset name or folder.
        config (`str`, *optional*): the dataset configuration (``load_dataset(name, config)``).
        split (`str`, defaults to `"train"`): the split to read.
        prompt_column (`str`, defaults to `"prompt"`): the column holding the prompt, a string or a conversation;
            a ``messages`` column is used when it is missing.
        preprocessing (`str`, defaults to `"auto"`): ``"hh-rlhf"``, ``"shp"``, ``"none"`` or ``"auto"`` (from
            the column layout, see [`detect_preprocessing`]). SHP keeps one prompt per ``post_id``.
        max_prompts (`int`, *optional*): keep the first ``max_prompts`` (after shuffling when asked).
        shuffle_seed (`int`, *optional*): shuffle with this seed before cutting (the paper draws 1000 at random).

    Returns:
        `Dataset`: one ``prompt`` per row, a string or a list of messages ending with a user turn.

    Example:
        ```python
        >>> load_prompt_dataset("tests/fixtures/hh_rlhf.jsonl")[0]["prompt"][-1]["role"]
        'user'
        ```
    """
    if preprocessing not in PREPROCESSINGS:
        raise ValueError(f"`preprocessing` must be one of {PREPROCESSINGS}, got {preprocessing!r}.")
    if max_prompts is not None and (isinstance(max_prompts, bool) or max_prompts < 1):
        raise ValueError(f"`max_prompts` must be >= 1 or None, got {max_prompts!r}.")
    if source == BUILTIN:
        from .prompts import builtin_prompts

        dataset = Dataset.from_dict({"prompt": builtin_prompts()})
    elif source == GENERAL or source.startswith(f"{GENERAL}:"):
        from .prompts import GENERAL_PROMPTS, prompt_split

        if source not in GENERAL_SOURCES:
            raise ValueError(f"`source` {source!r} is not a general prompt source; use one of {GENERAL_SOURCES}.")
        general = list(GENERAL_PROMPTS) if source == GENERAL else prompt_split(source.split(":", 1)[1])
        dataset = Dataset.from_dict({"prompt": general})
    else:
        path = Path(source)
        if path.suffix in {".json", ".jsonl"}:
            if not path.is_file():
                raise FileNotFoundError(f"`source` file {source!r} does not exist; check the path.")
            with path.open("rb") as f:
                head = f.read(1 << 16).strip()  # a blank file, or an empty JSON list, holds no prompts
            if not head or head in (b"[]", b"{}"):
                raise ValueError(
                    f"`source` file {source!r} has no prompts (it is blank or an empty JSON list); put one JSON "
                    f"object with a `{prompt_column}` per line (.jsonl) or a list of them (.json) in it."
                )
            try:
                dataset = load_dataset("json", data_files=str(path), split="train")
            except (StopIteration, ValueError) as error:  # datasets' errors for files without rows
                raise ValueError(
                    f"`source` file {source!r} could not be read as prompts ({type(error).__name__}: {error}); put one "
                    f"JSON object with a `{prompt_column}` per line (.jsonl) or a list of them (.json) in it."
                ) from error
        elif (path / "state.json").is_file() or (path / "dataset_dict.json").is_file():
            loaded = load_from_disk(str(path))
            dataset = loaded[split] if not isinstance(loaded, Dataset) else loaded
        else:
            dataset = load_dataset(source, config, split=split)
    if shuffle_seed is not None:
        dataset = dataset.shuffle(seed=shuffle_seed)
    mode = detect_preprocessing(dataset.column_names) if preprocessing == "auto" else preprocessing
    if mode == "shp" and "post_id" in dataset.column_names:
        # SHP holds several comment pairs per post: one prompt per post
        first: dict[str, int] = {}
        for i, post in enumerate(dataset["post_id"]):
            first.setdefault(post, i)
        dataset = dataset.select(sorted(first.values()))
    if max_prompts is not None:
        dataset = dataset.select(range(min(max_prompts, len(dataset))))
    prompts = [extract_prompt(row, mode, prompt_column) for row in dataset]
    if not prompts:
        raise ValueError(f"no prompts in {source!r} (split {split!r}); check `source` and `split`.")
    return Dataset.from_dict({"prompt": prompts})


def load_prompts(source: str = BUILTIN, **kwargs: Any) -> list[Prompt]:
    """[`load_prompt_dataset`] as a plain list of prompts (strings or conversations)."""
    return list(load_prompt_dataset(source, **kwargs)["prompt"])


# -- framing ---------------------------------------------------------------------------------------------------
def to_messages(prompt: Prompt) -> list[Message]:
    """A prompt as a conversation: a string becomes one user message."""
    if isinstance(prompt, str):
        return [{"role": "user", "content": prompt}]
    return [{"role": m["role"], "content": m["content"]} for m in prompt]


def prompt_text(prompt: Prompt) -> str:
    """The prompt as plain text for reward functions: the string, the single user turn, or the transcript.

    A multi-turn dialogue becomes ``"Human: ...\\n\\nAssistant: ...\\n\\nHuman: ..."`` (HH-RLHF's layout).
    """
    if isinstance(prompt, str):
        return prompt
    if len(prompt) == 1:
        return prompt[0]["content"]
    return "\n\n".join(f"{'Human' if m['role'] == 'user' else m['role'].title()}: {m['content']}" for m in prompt)


def framing_for_model(model_name_or_path: str) -> str:
    """The App. C.3 framing for a model name: ``"human"`` for Vicuna, ``"user"`` for Llama / Gemma, else ``"auto"``."""
    name = model_name_or_path.lower()
    for family in ("vicuna", "llama", "gemma"):  # vicuna first: its checkpoints are Llama models
        if family in name:
            return MODEL_FAMILY_FRAMING[family]
    return "auto"


def resolve_framing(framing: str, tokenizer: Any) -> str:
    """``"auto"`` becomes ``"chat_template"`` when the tokenizer has one, else ``"user"``."""
    if framing not in FRAMINGS:
        raise ValueError(f"`framing` must be one of {FRAMINGS}, got {framing!r}.")
    if framing == "auto":
        return "chat_template" if getattr(tokenizer, "chat_template", None) else "user"
    if framing == "chat_template" and not getattr(tokenizer, "chat_template", None):
        raise ValueError(
            "`framing='chat_template'` but the tokenizer has no chat template; use framing 'user' (Llama/Gemma), "
            "'human' (Vicuna) or 'none'."
        )
    return framing


def render_prompt(tokenizer: Any, prompt: Prompt, framing: str = "auto") -> str:
    """The text the model is given for a prompt.

    Args:
        tokenizer (`PreTrainedTokenizerBase`): used for ``"chat_template"`` (and ``"auto"``).
        prompt (`str` or `list[dict]`): a prompt string or a conversation ending with a user turn.
        framing (`str`, defaults to `"auto"`): ``"chat_template"`` (turns become messages, with the generation
            prompt), ``"user"`` / ``"human"`` (App. C.3: each user turn after ``"User:"`` / ``"Human:"``, each
            assistant turn after ``"Assistant:"``, ending with ``"Assistant:"``), ``"none"`` (the text as is), or
            ``"auto"`` (chat template if the tokenizer has one, else ``"user"``).

    Example:
        ```python
        >>> render_prompt(None, "Hi there", framing="user")
        'User: Hi there\\n\\nAssistant:'
        ```
    """
    framing = resolve_framing(framing, tokenizer)
    if framing == "chat_template":
        return tokenizer.apply_chat_template(to_messages(prompt), tokenize=False, add_generation_prompt=True)
    if framing == "none":
        return prompt if isinstance(prompt, str) else "\n\n".join(m["content"] for m in prompt)
    begin, finish = FRAMING_WORDS[framing]
    words = {"user": begin, "assistant": finish}
    turns = [f"{words[m['role']]} {m['content']}" if m["role"] in words else m["content"] for m in to_messages(prompt)]
    return "\n\n".join([*turns, finish])


# -- datasets from AISP records --------------------------------------------------------------------------------
def _finite(samples: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [s for s in samples if isinstance(s["reward"], int | float) and math.isfinite(s["reward"])]


def _best(record: Mapping[str, Any]) -> dict[str, Any]:
    samples = _finite(record["samples"])
    if not samples:
        raise ValueError(f"record {record.get('prompt_id')!r} has no sample with a finite reward.")
    return max(samples, key=_objective)  # first one on ties, as SearchResult.best (by score after a KL search)


def _prompt_field(record: Mapping[str, Any], dataset_format: str) -> Prompt:
    if dataset_format == "conversational":
        return to_messages(record.get("prompt_input", record["prompt"]))
    return record.get("query", record["prompt"])


def _completion_field(text: str, dataset_format: str) -> str | list[Message]:
    return [{"role": "assistant", "content": text}] if dataset_format == "conversational" else text


def _check_format(dataset_format: str) -> None:
    if dataset_format not in DATASET_FORMATS:
        raise ValueError(
            f"`dataset_format` must be one of {DATASET_FORMATS}, got {dataset_format!r}; 'standard' gives strings "
            "(the prompt as the model saw it), 'conversational' gives message lists for the chat template."
        )


def build_sft_dataset(records: Sequence[Mapping[str, Any]], dataset_format: str = "standard") -> Dataset:
    """An SFT dataset (trl prompt-completion) with each prompt's best AISP sample as the completion.

    Args:
        records (`Sequence[dict]`): pipeline records (``AISPResult.to_dict()`` plus ``prompt_id``, ``prompt_input``,
            ``query``).
        dataset_format (`str`, defaults to `"standard"`): ``"standard"``: ``prompt`` is the text the model saw
            (chat template or framing applied) and ``completion`` a string; ``"conversational"``: ``prompt`` is the
            conversation and ``completion`` ``[{"role": "assistant", "content": ...}]``.

    Returns:
        `Dataset`: columns ``prompt``, ``completion``, ``prompt_id``, ``reward``.
    """
    _check_format(dataset_format)
    rows = {"prompt": [], "completion": [], "prompt_id": [], "reward": []}
    for i, record in enumerate(records):
        best = _best(record)
        rows["prompt"].append(_prompt_field(record, dataset_format))
        rows["completion"].append(_completion_field(best["completion"], dataset_format))
        rows["prompt_id"].append(int(record.get("prompt_id", i)))
        rows["reward"].append(float(best["reward"]))
    return Dataset.from_dict(rows)


def build_preference_dataset(
    records: Sequence[Mapping[str, Any]],
    rejected: Literal["worst", "greedy", "random"] = "worst",
    dataset_format: str = "standard",
    drop_nonpositive_margin: bool = True,
    seed: int = 0,
) -> Dataset:
    """A preference dataset (trl prompt-chosen-rejected): chosen = the best AISP sample.

    Args:
        records (`Sequence[dict]`): pipeline records; ``rejected="greedy"`` needs their ``greedy`` entry
            (``{"completion", "reward"}``, the base model's plain greedy response).
        rejected (`str`, defaults to `"worst"`): ``"worst"`` (lowest-reward sample), ``"greedy"`` (the base model's
            greedy response) or ``"random"`` (a sample other than the best, drawn with ``seed`` and the prompt id).
        dataset_format (`str`, defaults to `"standard"`): see [`build_sft_dataset`].
        drop_nonpositive_margin (`bool`, defaults to True): drop pairs whose ``margin`` (chosen - rejected
            reward) is <= 0, i.e. no preference signal.
        seed (`int`, defaults to 0): seed of ``rejected="random"``.

    Returns:
        `Dataset`: ``prompt``, ``chosen``, ``rejected``, ``prompt_id``, ``chosen_reward``, ``rejected_reward``,
        ``margin``. From a KL-regularised search (samples with ``kl`` and ``score``, `AISPConfig.kl_coef`) also
        ``chosen_kl``, ``rejected_kl``, ``chosen_score``, ``rejected_score``: the worst sample and the margin are then
        by score, ``s = r - beta * KL`` (a greedy ``rejected`` has no score: its margin stays by reward).
    """
    _check_format(dataset_format)
    if rejected not in REJECTED_CHOICES:
        raise ValueError(f"`rejected` must be one of {REJECTED_CHOICES}, got {rejected!r}.")
    regularised = any("score" in s for record in records for s in record["samples"])
    columns = ("prompt", "chosen", "rejected", "prompt_id", "chosen_reward", "rejected_reward", "margin")
    columns += ("chosen_kl", "rejected_kl", "chosen_score", "rejected_score") if regularised else ()
    rows: dict[str, list[Any]] = {c: [] for c in columns}
    for i, record in enumerate(records):
        prompt_id = int(record.get("prompt_id", i))
        best = _best(record)
        if rejected == "greedy":
            greedy = record.get("greedy")
            if not greedy:
                raise ValueError(
                    f"record {prompt_id} has no `greedy` entry; `rejected='greedy'` needs records written by "
                    "`aisp_trl.pipeline.run_generation` (which records the base model's greedy response)."
                )
            other = {"completion": greedy["completion"], "reward": greedy["reward"]}
        elif rejected == "worst":
            other = min(_finite(record["samples"]), key=_objective)
        else:
            pool = [s for s in _finite(record["samples"]) if s is not best] or [best]
            other = random.Random(f"{seed}:{prompt_id}").choice(pool)
        scored = regularised and "score" in best and "score" in other
        margin = _objective(best) - _objective(other) if scored else float(best["reward"]) - float(other["reward"])
        if drop_nonpositive_margin and not margin > 0:
            continue
        rows["prompt"].append(_prompt_field(record, dataset_format))
        rows["chosen"].append(_completion_field(best["completion"], dataset_format))
        rows["rejected"].append(_completion_field(other["completion"], dataset_format))
        rows["prompt_id"].append(prompt_id)
        rows["chosen_reward"].append(float(best["reward"]))
        rows["rejected_reward"].append(float(other["reward"]))
        rows["margin"].append(margin)
        if regularised:
            for name, sample in (("chosen", best), ("rejected", other)):
                rows[f"{name}_kl"].append(sample.get("kl"))
                rows[f"{name}_score"].append(sample.get("score"))
    return Dataset.from_dict(rows)


def _objective(sample: Mapping[str, Any]) -> float:
    """What the search ranked a sample by: its ``score`` (a KL-regularised search) or its ``reward``."""
    return float(sample["score"] if sample.get("score") is not None else sample["reward"])


# -- saving ------------------------------------------------------------------------------------------------------
def dataset_card(dataset: Dataset, kind: str, info: Mapping[str, Any]) -> str:
    """A dataset card (README.md) recording the method, model, reward, hyper-parameters and counts.

    Args:
        dataset (`Dataset`): the dataset being saved.
        kind (`str`): ``"sft"`` or ``"preference"`` (or any label).
        info (`Mapping`): what to record, e.g. ``{"model": ..., "reward": ..., "hyper_parameters": {...},
            "counts": {...}}``; every key is written.
    """
    info = dict(info)
    columns = ", ".join(f"`{c}`" for c in dataset.column_names)
    lines = [
        "---",
        "tags:",
        "- trl",
        "- aisp",
        f"- {kind}",
        "size_categories:",
        f"- {_size_category(len(dataset))}",
        "---",
        "",
        f"# AISP {kind} dataset",
        "",
        "Generated with [aisp-trl](https://arxiv.org/abs/2510.26219): adaptive importance sampling on pre-logits "
        "(AISP), a test-time alignment method. Each prompt was answered by AISP's best sample "
        + ("(the SFT completion)." if kind == "sft" else "(the chosen response)."),
        "",
        f"- **Method**: {info.pop('method', 'AISP')}",
        f"- **Model**: {info.pop('model', 'unknown')}",
        f"- **Reward**: {info.pop('reward', 'unknown')}",
        f"- **Rows**: {len(dataset)}",
        f"- **Columns**: {columns}",
    ]
    for key, value in info.items():
        if isinstance(value, Mapping):
            lines += ["", f"## {key.replace('_', ' ').capitalize()}", ""]
            lines += [f"- `{k}`: {json.dumps(v) if not isinstance(v, str) else v}" for k, v in value.items()]
        else:
            lines.append(f"- **{key.replace('_', ' ').capitalize()}**: {value}")
    lines += [
        "",
        "## Load",
        "",
        "```python",
        "from datasets import load_from_disk, load_dataset",
        'ds = load_from_disk("<folder>")  # or load_dataset("parquet", data_files="<folder>/data/*.parquet")',
        "```",
        "",
    ]
    return "\n".join(lines)


def _size_category(n: int) -> str:
    for bound, label in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K")):
        if n < bound:
            return label
    return "n>100K"


def save_dataset(
    dataset: Dataset,
    path: str | Path,
    kind: str,
    info: Mapping[str, Any] | None = None,
    push_to_hub: str | None = None,
) -> Path:
    """Saves a dataset into ``path`` (``save_to_disk``), with ``path/data/train.parquet`` and ``path/README.md``.

    ``datasets.load_from_disk(path)`` loads the folder itself (the parquet copy and the card beside the arrow files
    do not disturb it); ``load_dataset("parquet", data_files=f"{path}/data/train.parquet")`` reads the copy.

    Args:
        dataset (`Dataset`): the dataset.
        path (`str` or `Path`): the folder (created).
        kind (`str`): ``"sft"`` or ``"preference"``, written to the card.
        info (`Mapping`, *optional*): card contents, see [`dataset_card`].
        push_to_hub (`str`, *optional*): a Hub repository id; when set, ``dataset.push_to_hub`` is called.

    Returns:
        `Path`: the folder.
    """
    path = Path(path)
    dataset.save_to_disk(str(path))
    (path / "data").mkdir(parents=True, exist_ok=True)
    dataset.to_parquet(str(path / "data" / "train.parquet"))
    card = dataset_card(dataset, kind, info or {})
    (path / "README.md").write_text(card)
    if push_to_hub:
        dataset.push_to_hub(push_to_hub)
        from huggingface_hub import DatasetCard

        DatasetCard(card).push_to_hub(push_to_hub, repo_type="dataset")
    return path
