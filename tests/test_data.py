"""Prompt sources, HH-RLHF / SHP preparation (paper App. C.3), framing, and the SFT / preference builders."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from _tiny import make_tokenizer
from datasets import Dataset, load_dataset, load_from_disk

from aisp_trl import data as data_module
from aisp_trl.data import (
    build_preference_dataset,
    build_sft_dataset,
    dataset_card,
    detect_preprocessing,
    extract_prompt,
    framing_for_model,
    hh_rlhf_prompt,
    load_prompt_dataset,
    load_prompts,
    parse_hh_dialogue,
    prompt_text,
    render_prompt,
    save_dataset,
    shp_prompt,
)

FIXTURES = Path(__file__).parent / "fixtures"
SHP_COLUMNS = [
    "post_id",
    "domain",
    "upvote_ratio",
    "history",
    "c_root_id_A",
    "c_root_id_B",
    "created_at_utc_A",
    "created_at_utc_B",
    "score_A",
    "score_B",
    "human_ref_A",
    "human_ref_B",
    "labels",
    "seconds_difference",
    "score_ratio",
]
TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


def _rows(name: str) -> list[dict]:
    return [json.loads(line) for line in (FIXTURES / name).read_text().splitlines()]


# -- HH-RLHF and SHP -----------------------------------------------------------------------------------------------
def test_fixtures_have_the_real_column_layout():
    assert all(list(row) == ["chosen", "rejected"] for row in _rows("hh_rlhf.jsonl"))
    assert all(list(row) == SHP_COLUMNS for row in _rows("shp.jsonl"))


def test_hh_rlhf_prompt_drops_the_final_response_and_keeps_the_dialogue():
    row = _rows("hh_rlhf.jsonl")[0]
    prompt = hh_rlhf_prompt(row)
    assert [m["role"] for m in prompt] == ["user", "assistant", "user"]
    assert prompt[0]["content"] == "What are some cuss words in english?"
    assert prompt[-1]["content"] == "What's your favorite one?"
    # the same dialogue as the rejected transcript up to its final response
    assert parse_hh_dialogue(row["rejected"])[:-1] == prompt
    assert "I haven't even thought" not in json.dumps(prompt)


def test_hh_rlhf_single_turn_and_bad_text():
    prompt = hh_rlhf_prompt(_rows("hh_rlhf.jsonl")[1])
    assert prompt == [{"role": "user", "content": "What kind of noises did dinosaurs make?"}]
    with pytest.raises(ValueError, match="not an HH-RLHF transcript"):
        parse_hh_dialogue("just some text")


def test_shp_prompt_is_the_post():
    row = _rows("shp.jsonl")[0]
    assert shp_prompt(row) == row["history"]
    assert detect_preprocessing(row) == "shp"


def test_load_prompt_dataset_detects_hh_and_shp():
    hh = load_prompt_dataset(str(FIXTURES / "hh_rlhf.jsonl"))
    assert hh.column_names == ["prompt"] and len(hh) == 4
    assert all(p[-1]["role"] == "user" for p in hh["prompt"])
    rows = _rows("shp.jsonl")
    assert rows[0]["post_id"] == rows[1]["post_id"]  # SHP: several comment pairs per post
    shp = load_prompts(str(FIXTURES / "shp.jsonl"), max_prompts=2)
    assert shp == [rows[0]["history"], rows[2]["history"]]  # one prompt per post
    assert len(load_prompts(str(FIXTURES / "shp.jsonl"))) == 4


def test_framing_of_app_c3():
    dialogue = hh_rlhf_prompt(_rows("hh_rlhf.jsonl")[0])
    text = render_prompt(None, dialogue, framing="user")
    assert text.startswith("User: What are some cuss words")
    assert "\n\nAssistant: Here's an incomplete list.\n\nUser: What's your favorite one?" in text
    assert text.endswith("\n\nAssistant:")
    vicuna = render_prompt(None, "How are you?", framing="human")
    assert vicuna == "Human: How are you?\n\nAssistant:"
    assert render_prompt(None, "raw text", framing="none") == "raw text"
    assert framing_for_model("lmsys/vicuna-7b-v1.5") == "human"
    assert framing_for_model("meta-llama/Meta-Llama-3-8B") == "user"
    assert framing_for_model("google/gemma-3-4b-it") == "user"
    assert framing_for_model("Qwen/Qwen2-0.5B") == "auto"


def test_chat_template_framing_turns_the_dialogue_into_messages():
    tokenizer = make_tokenizer()
    with pytest.raises(ValueError, match="no chat template"):
        render_prompt(tokenizer, "hi", framing="chat_template")
    assert render_prompt(tokenizer, "hi", framing="auto") == "User: hi\n\nAssistant:"  # no template: App. C.3 words
    tokenizer.chat_template = TEMPLATE
    dialogue = hh_rlhf_prompt(_rows("hh_rlhf.jsonl")[0])
    text = render_prompt(tokenizer, dialogue)
    assert text == (
        "<|user|>What are some cuss words in english?\n<|assistant|>Here's an incomplete list.\n"
        "<|user|>What's your favorite one?\n<|assistant|>"
    )


def test_prompt_text_for_rewards():
    assert prompt_text("a") == "a"
    assert prompt_text([{"role": "user", "content": "b"}]) == "b"
    dialogue = hh_rlhf_prompt(_rows("hh_rlhf.jsonl")[1 - 1])
    assert prompt_text(dialogue).startswith("Human: What are some") and "\n\nAssistant: " in prompt_text(dialogue)


# -- other sources -----------------------------------------------------------------------------------------------
def test_conversational_messages_column_drops_the_last_assistant_turn():
    prompts = load_prompts(str(FIXTURES / "messages.jsonl"))
    assert prompts[0] == [
        {"role": "system", "content": "be nice."},
        {"role": "user", "content": "tell me a joke."},
    ]
    assert prompts[1] == [{"role": "user", "content": "hello there."}]


def test_builtin_saved_and_shuffled_sources(tmp_path):
    from aisp_trl.prompts import builtin_prompts

    assert load_prompts("builtin", max_prompts=3) == builtin_prompts(3)
    shuffled = load_prompts("builtin", shuffle_seed=1)
    assert sorted(shuffled) == sorted(builtin_prompts()) and shuffled != builtin_prompts()
    Dataset.from_dict({"text": ["one", "two"]}).save_to_disk(str(tmp_path / "saved"))
    assert load_prompts(str(tmp_path / "saved"), prompt_column="text") == ["one", "two"]


def test_prompt_source_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_prompt_dataset(str(tmp_path / "missing.jsonl"))
    with pytest.raises(ValueError, match="`preprocessing` must be one of"):
        load_prompt_dataset("builtin", preprocessing="alpaca")
    with pytest.raises(ValueError, match="no `prompt` or `messages` column"):
        extract_prompt({"question": "x"})
    with pytest.raises(ValueError, match="must end with a user turn"):
        extract_prompt({"messages": [{"role": "assistant", "content": "x"}]})


@pytest.mark.parametrize("name, content", [("empty.jsonl", ""), ("blank.jsonl", "\n  \n"), ("empty.json", ""),
                                           ("list.json", "[]\n")])  # fmt: skip
def test_empty_prompt_files_are_named(tmp_path, name, content):
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(ValueError, match=rf"`source` file '.*{name}' has no prompts"):
        load_prompt_dataset(str(path))


# -- builders ------------------------------------------------------------------------------------------------------
def _sample(completion: str, reward: float, iteration: int = 1, index: int = 0) -> dict:
    return {
        "text": "q " + completion,
        "completion": completion,
        "completion_ids": [],
        "reward": reward,
        "iteration": iteration,
        "index": index,
    }


def _records() -> list[dict]:
    return [
        {
            "prompt_id": 0,
            "prompt_input": "say something",
            "query": "User: say something\n\nAssistant:",
            "prompt": "say something",
            "samples": [_sample("bad", -1.0), _sample("best", 2.0, 1, 1), _sample("ok", 0.5, 2, 0)],
            "greedy": {"completion": "plain", "completion_ids": [], "reward": 0.0},
        },
        {
            "prompt_id": 1,
            "prompt_input": [{"role": "user", "content": "hi"}],
            "query": "User: hi\n\nAssistant:",
            "prompt": "hi",
            "samples": [_sample("same", 1.0), _sample("same2", 1.0, 1, 1), _sample("nan", float("nan"), 1, 2)],
            "greedy": {"completion": "better greedy", "completion_ids": [], "reward": 3.0},
        },
    ]


def test_sft_dataset_standard_and_conversational():
    sft = build_sft_dataset(_records())
    assert sft.column_names == ["prompt", "completion", "prompt_id", "reward"]
    assert sft[0] == {
        "prompt": "User: say something\n\nAssistant:",
        "completion": "best",
        "prompt_id": 0,
        "reward": 2.0,
    }
    assert sft[1]["completion"] == "same"  # first on ties; NaN never wins
    conv = build_sft_dataset(_records(), "conversational")
    assert conv[0]["prompt"] == [{"role": "user", "content": "say something"}]
    assert conv[0]["completion"] == [{"role": "assistant", "content": "best"}]
    with pytest.raises(ValueError, match="`dataset_format` must be one of"):
        build_sft_dataset(_records(), "chatml")


def test_preference_dataset_rejected_choices_and_margins():
    worst = build_preference_dataset(_records(), "worst")
    # prompt 1 has all finite rewards equal: margin 0, dropped
    assert worst["prompt_id"] == [0]
    assert (worst[0]["chosen"], worst[0]["rejected"], worst[0]["margin"]) == ("best", "bad", 3.0)
    kept = build_preference_dataset(_records(), "worst", drop_nonpositive_margin=False)
    assert kept["margin"] == [3.0, 0.0]
    greedy = build_preference_dataset(_records(), "greedy", drop_nonpositive_margin=False)
    assert greedy["rejected"] == ["plain", "better greedy"] and greedy["margin"] == [2.0, -2.0]
    assert build_preference_dataset(_records(), "greedy")["prompt_id"] == [0]
    random_pairs = build_preference_dataset(_records(), "random", drop_nonpositive_margin=False, seed=3)
    assert random_pairs[0]["rejected"] in {"bad", "ok"}
    assert (
        random_pairs["rejected"]
        == build_preference_dataset(_records(), "random", drop_nonpositive_margin=False, seed=3)["rejected"]
    )
    assert set(worst.column_names) == {
        "prompt",
        "chosen",
        "rejected",
        "prompt_id",
        "chosen_reward",
        "rejected_reward",
        "margin",
    }


def test_preference_dataset_conversational_and_errors():
    conv = build_preference_dataset(_records(), dataset_format="conversational")
    assert conv[0]["chosen"] == [{"role": "assistant", "content": "best"}]
    assert conv[0]["rejected"] == [{"role": "assistant", "content": "bad"}]
    no_greedy = [{k: v for k, v in r.items() if k != "greedy"} for r in _records()]
    with pytest.raises(ValueError, match="has no `greedy` entry"):
        build_preference_dataset(no_greedy, "greedy")
    with pytest.raises(ValueError, match="`rejected` must be one of"):
        build_preference_dataset(_records(), "median")


def test_save_dataset_writes_arrow_parquet_and_card(tmp_path, monkeypatch):
    pushed = []
    monkeypatch.setattr(Dataset, "push_to_hub", lambda self, repo, **kw: pushed.append(("data", repo)))
    import huggingface_hub

    monkeypatch.setattr(
        huggingface_hub.DatasetCard, "push_to_hub", lambda self, repo, **kw: pushed.append(("card", repo))
    )
    dataset = build_preference_dataset(_records(), drop_nonpositive_margin=False)
    info = {
        "model": "tiny-llama",
        "reward": "vader",
        "hyper_parameters": {"sample_size": 8, "lam": 0.1},
        "counts": {"prompts": 2, "pairs": 2},
    }
    path = save_dataset(dataset, tmp_path / "prefs", "preference", info, push_to_hub="me/aisp-prefs")
    # the folder itself loads with load_from_disk (the README names it), the card and parquet copy beside it
    assert load_from_disk(str(path)).to_list() == dataset.to_list()
    assert load_from_disk(str(tmp_path / "prefs")).to_list() == dataset.to_list()
    parquet = load_dataset("parquet", data_files=str(path / "data" / "*.parquet"), split="train")
    assert parquet["margin"] == dataset["margin"]
    card = (path / "README.md").read_text()
    for expected in ("AISP preference dataset", "tiny-llama", "vader", "`sample_size`: 8", "`pairs`: 2", "- trl"):
        assert expected in card
    assert pushed == [("data", "me/aisp-prefs"), ("card", "me/aisp-prefs")]
    assert "**Rows**: 1" in dataset_card(dataset.select([0]), "sft", {})
    assert 'load_from_disk("<folder>")' in card
    # saving again into the same folder (a rerun) replaces the dataset
    save_dataset(dataset.select([0]), path, "preference", info)
    assert load_from_disk(str(path)).to_list() == dataset.select([0]).to_list()


def test_module_exports_documented_constants():
    assert data_module.FRAMING_WORDS["user"] == ("User:", "Assistant:")
    assert data_module.MODEL_FAMILY_FRAMING == {"llama": "user", "gemma": "user", "vicuna": "human"}
