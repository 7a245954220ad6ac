"""Prompt rendering and tokenization of a validated request (`aisp_trl.serve.protocol.ParsedRequest`)."""

from __future__ import annotations

from typing import Any

from ..prompts import apply_chat_template
from .errors import bad_request
from .protocol import ParsedRequest


def render_prompt(request: ParsedRequest, tokenizer: Any) -> None:
    """Sets ``request.prompt_text`` (and ``add_special_tokens``) for a chat request from its messages.

    A single user message goes through `aisp_trl.prompts.apply_chat_template` (as ``aisp-trl generate`` renders
    prompts); a conversation through the tokenizer's own chat template. A tokenizer without a template takes a single
    user message as plain text.
    """
    if request.kind != "chat":
        return
    messages = request.messages
    has_template = getattr(tokenizer, "chat_template", None) is not None
    if len(messages) == 1:
        request.prompt_text = apply_chat_template(tokenizer, [messages[0]["content"]])[0]
    elif has_template:
        request.prompt_text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    else:
        raise bad_request(
            "this model's tokenizer has no chat template, so only a single user message can be answered; send one "
            "message or use /v1/completions.",
            "messages",
            "no_chat_template",
        )
    request.add_special_tokens = not has_template  # the template holds the special tokens
    if not request.prompt_text:
        raise bad_request("the prompt is empty; send a non-empty user message.", "messages")


def tokenize(request: ParsedRequest, tokenizer: Any, vocab_size: int, context_length: int | None) -> list[int]:
    """The query's token ids, checked against the vocabulary and the model's context (prompt + horizon)."""
    if request.prompt_ids is not None:
        ids = request.prompt_ids
        bad = next((t for t in ids if t >= vocab_size), None)
        if bad is not None:
            raise bad_request(
                f"`prompt` holds token id {bad}, outside this model's vocabulary of {vocab_size}.", "prompt"
            )
    else:
        ids = tokenizer(request.prompt_text, add_special_tokens=request.add_special_tokens).input_ids
    if not ids:
        raise bad_request(
            "the prompt tokenizes to no tokens; send a non-empty prompt.",
            "messages" if request.kind == "chat" else "prompt",
        )
    if request.prompt_ids is not None:
        request.reward_prompt = tokenizer.decode(ids, skip_special_tokens=True)
    if context_length is not None and len(ids) + request.spec.horizon > context_length:
        raise bad_request(
            f"the prompt has {len(ids)} tokens and `max_tokens` is {request.spec.horizon}: "
            f"{len(ids) + request.spec.horizon} positions, beyond this model's context of {context_length}; shorten "
            "the prompt or lower `max_tokens`.",
            "messages" if request.kind == "chat" else "prompt",
            "context_length_exceeded",
        )
    return list(ids)
