"""Reward adapters: plain callables, trl GRPO-style functions, sequence-classification RMs, VADER."""

import math

import numpy as np
import pytest
import torch
from _tiny import make_tokenizer
from transformers import LlamaConfig, LlamaForSequenceClassification

from aisp_trl.rewards import (
    CompletionReward,
    SequenceClassifierReward,
    TextReward,
    VaderSentimentReward,
    as_reward_function,
    check_rewards,
)

PROMPTS = ["how was the trip?", "rate the food."]
COMPLETIONS = ["it was wonderful, i loved it!", "terrible, awful and sad."]
TEXTS = [p + " " + c for p, c in zip(PROMPTS, COMPLETIONS, strict=True)]


def _tiny_rm(num_labels=1):
    config = LlamaConfig(vocab_size=33, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2, num_labels=num_labels, pad_token_id=0)  # fmt: skip
    torch.manual_seed(0)
    return LlamaForSequenceClassification(config).eval()


def test_plain_callable_scores_full_texts():
    seen = []
    reward = as_reward_function(lambda texts: seen.extend(texts) or [float(len(t)) for t in texts])
    assert isinstance(reward, TextReward)
    out = reward(PROMPTS, COMPLETIONS, TEXTS)
    assert seen == TEXTS and out.tolist() == [float(len(t)) for t in TEXTS] and out.dtype == torch.float64


def test_grpo_style_function_gets_prompts_completions_and_kwargs_none_is_nan():
    def fn(prompts, completions, bonus, **kwargs):
        return [None if "terrible" in c else len(c) + bonus for p, c in zip(prompts, completions, strict=True)]

    reward = CompletionReward(fn, bonus=1.0)
    with pytest.warns(RuntimeWarning, match="1 non-finite"):
        out = reward(PROMPTS, COMPLETIONS, TEXTS)
    assert out[0] == len(COMPLETIONS[0]) + 1.0 and math.isnan(out[1])


def test_vader_prefers_positive_completions_and_ignores_the_prompt():
    reward = VaderSentimentReward()
    out = reward(["awful awful awful"] * 2, COMPLETIONS, TEXTS)
    assert out[0] > 0.5 and out[1] < -0.5


def test_sequence_classifier_uses_logit_zero_and_batches_consistently():
    tok, rm = make_tokenizer(), _tiny_rm(num_labels=2)
    reward = SequenceClassifierReward(rm, tok, batch_size=1)
    batched = SequenceClassifierReward(rm, tok, batch_size=8)(PROMPTS, COMPLETIONS, TEXTS)
    one_by_one = reward(PROMPTS, COMPLETIONS, TEXTS)
    torch.testing.assert_close(batched, one_by_one, atol=1e-5, rtol=1e-5)
    enc = tok(PROMPTS[0] + "\n" + COMPLETIONS[0], return_tensors="pt")
    with torch.no_grad():
        expected = rm(**enc).logits[0, 0].item()
    assert batched[0].item() == pytest.approx(expected, abs=1e-5)


def test_sequence_classifier_truncates_the_prompt_side_first():
    # a long prompt must not push the response out of the window: the reward judges the response
    tok, rm = make_tokenizer(), _tiny_rm()
    long_prompt, completion = "the " * 100 + "question?", "a short, good answer."
    reward = SequenceClassifierReward(rm, tok, max_length=30)
    ids = reward._tokenize(long_prompt, completion)
    # the last 30 tokens: the prompt's end, the separator (unknown to the tiny vocabulary) and the whole response
    assert len(ids) == 30 and tok.decode(ids) == "uestion?<pad>" + completion
    out = reward([long_prompt], [completion], ["..."])
    full = tok(long_prompt + "\n" + completion).input_ids
    with torch.no_grad():
        expected = rm(input_ids=torch.tensor([full[-30:]])).logits[0, 0].item()
    assert out[0].item() == pytest.approx(expected, abs=1e-5)
    # a batch with a short pair is padded, not truncated, and gives the same scores
    both = reward([long_prompt, "hi"], [completion, "yo"], ["...", "..."])
    assert both[0].item() == pytest.approx(expected, abs=1e-5)


def test_sequence_classifier_adds_no_special_tokens_after_a_chat_template():
    # a Llama-3-style template starts with BOS: tokenizing it with add_special_tokens=True would give two
    from tokenizers import processors

    tok, rm = make_tokenizer(), _tiny_rm()
    tok.bos_token = "<eos>"  # the tiny vocabulary's BOS stand-in (bos_token_id of the tiny models)
    bos = tok.bos_token_id
    tok.backend_tokenizer.post_processor = processors.TemplateProcessing(
        single="<eos> $A", special_tokens=[("<eos>", bos)]
    )
    assert tok("hi").input_ids[:2] == [bos, tok.convert_tokens_to_ids("h")]  # the tokenizer adds a BOS itself
    tok.chat_template = "<eos>{% for m in messages %}{{ m['role'][0] }},{{ m['content'] }}.{% endfor %}"
    reward = SequenceClassifierReward(rm, tok, max_length=12)
    ids = reward._tokenize("hi", "yo")
    assert ids == tok("<eos>u,hi.a,yo.", add_special_tokens=False).input_ids and ids.count(bos) == 1
    long_ids = reward._tokenize("a much longer question", "yo")  # cut from the left, the BOS kept
    assert len(long_ids) == 12 and long_ids[0] == bos and tok.decode(long_ids[1:]).endswith("a,yo.")


def test_sequence_classifier_renders_the_chat_template_when_present():
    tok, rm = make_tokenizer(), _tiny_rm()
    tok.chat_template = "{% for m in messages %}{{ m['role'][0] }}:{{ m['content'] }}.{% endfor %}"
    reward = SequenceClassifierReward(rm, tok)
    assert reward._render("hi", "yo") == "u:hi.a:yo."
    out = reward(["hi"], ["yo"], ["hi yo"])
    with torch.no_grad():
        expected = rm(**tok("u:hi.a:yo.", return_tensors="pt")).logits[0, 0].item()
    assert out[0].item() == pytest.approx(expected, abs=1e-5)


def test_check_rewards_accepts_tensors_and_numpy_numbers():
    assert check_rewards(torch.tensor([1.0, 2.0]), 2).tolist() == [1.0, 2.0]
    assert check_rewards([np.float32(0.5), 1], 2).tolist() == [0.5, 1.0]
    # what trl's queries_to_scores returned in practice: 0-d tensors (reward-model logits), numpy scalars, arrays
    assert check_rewards([torch.tensor(0.5), torch.tensor(2, dtype=torch.int64)], 2).tolist() == [0.5, 2.0]
    assert check_rewards([np.float64(1.5), np.int64(3), np.array(0.25)], 3).tolist() == [1.5, 3.0, 0.25]
    assert check_rewards(np.array([1.0, -1.0]), 2).tolist() == [1.0, -1.0]
    assert check_rewards((torch.tensor(1.0, dtype=torch.bfloat16),), 1).tolist() == [1.0]


@pytest.mark.parametrize("values", [[torch.tensor(True), 1.0], [np.bool_(True), 1.0], ["1.0", 2.0], [None, 1.0]])
def test_check_rewards_still_rejects_bools_and_strings(values):
    with pytest.raises(ValueError, match="returned non-numbers"):
        check_rewards(values, 2)


def test_check_rewards_still_checks_the_count_of_tensors():
    with pytest.raises(ValueError, match="returned 3 scores for 2 texts"):
        check_rewards([torch.tensor(1.0)] * 3, 2)
    with pytest.raises(ValueError, match="returned 1 scores for 2 texts"):
        check_rewards(torch.tensor([1.0]), 2)


# -- JudgeReward -------------------------------------------------------------------------------------------------
def _judge(**kw):
    from _tiny import make_model

    from aisp_trl.rewards import JudgeReward

    return JudgeReward(make_model("llama"), make_tokenizer(), yes="yes", no="no", **kw)


def test_judge_is_the_yes_no_logit_gap_of_the_next_token():
    judge = _judge(template="q: {prompt} a: {response} ok?", batch_size=8)
    scores = judge(PROMPTS, COMPLETIONS, TEXTS)
    tok = judge.tokenizer
    for prompt, completion, score in zip(PROMPTS, COMPLETIONS, scores.tolist(), strict=True):
        ids = tok(f"q: {prompt} a: {completion} ok?\nAnswer:").input_ids
        with torch.no_grad():
            logits = judge.model(torch.tensor([ids])).logits[0, -1]
        expected = float(logits[tok.convert_tokens_to_ids("y")] - logits[tok.convert_tokens_to_ids("n")])
        assert score == pytest.approx(expected, abs=1e-4)
    assert judge.name == "judge" and len(set(scores.tolist())) == 2


def test_judge_batches_do_not_change_scores_and_long_inputs_keep_their_end():
    prompts, completions = PROMPTS * 3, ["ok", "a much longer answer than the others here", "no"] * 2
    one = _judge(batch_size=1)(prompts, completions, completions)
    many = _judge(batch_size=4)(prompts, completions, completions)
    torch.testing.assert_close(one, many, atol=1e-4, rtol=1e-4)
    judge = _judge(max_length=16)
    assert (
        len(judge._render("x" * 200, "fine")) == 16
        and judge._render("x" * 200, "fine")[-1] == judge.tokenizer(":").input_ids[-1]
    )


def test_judge_rejects_bad_templates_and_answers():
    with pytest.raises(ValueError, match=r"\{prompt\} and \{response\}"):
        _judge(template="no fields")
    with pytest.raises(ValueError, match="same token"):
        from _tiny import make_model

        from aisp_trl.rewards import JudgeReward

        JudgeReward(make_model("llama"), make_tokenizer(), yes="yes", no="yeah")


def test_every_fresh_prompt_has_a_reference_answer_and_no_other_split_does():
    from aisp_trl.prompts import prompt_split
    from aisp_trl.reference_answers import REFERENCE_ANSWERS

    fresh = prompt_split("fresh")
    assert len(fresh) == 27 and set(REFERENCE_ANSWERS) == set(fresh)
    assert not set(fresh) & (set(prompt_split("bench")) | set(prompt_split("tune")) | set(prompt_split("train")))
    assert all(20 <= len(answer.split()) <= 80 for answer in REFERENCE_ANSWERS.values())


def test_reference_reward_rewards_saying_what_the_reference_says_not_praise():
    from aisp_trl.rewards import ReferenceReward, SentenceEmbedder

    reward = ReferenceReward(embedder=SentenceEmbedder(device="cpu"))
    prompt = "How does yeast make dough rise?"
    answers = [
        "Yeast eats the sugar in the flour and gives off carbon dioxide, which the gluten traps, so the dough rises.",
        "Awesome! Awesome! Awesome! What a wonderful, wonderful, amazing question!",
        "How does yeast make dough rise? How does yeast make dough rise?",  # echoing the prompt
        reward.references[prompt],
    ]
    scores = reward([prompt] * 4, answers, answers).tolist()
    assert scores[3] == pytest.approx(1.0, abs=1e-5)
    assert scores[0] > 0.6 and scores[0] > scores[2] > scores[1]
    with pytest.raises(ValueError, match="no reference answer"):
        reward(["Write a poem about cats."], ["cats"], ["cats"])
    with pytest.raises(ValueError, match="`references`"):
        ReferenceReward({"p": "  "}, embedder=reward.embedder)
