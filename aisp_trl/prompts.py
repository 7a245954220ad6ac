"""Built-in prompts for steering a chat model toward positive sentiment, and chat-template wrapping."""

from __future__ import annotations

from transformers import PreTrainedTokenizerBase

BUILTIN_PROMPTS: tuple[str, ...] = (
    "Describe your commute this morning.",
    "Write a short review of a budget hotel you stayed at.",
    "What do you think about rainy Mondays?",
    "Tell me about the last time you waited in a long queue.",
    "Describe the food at a hospital cafeteria.",
    "How was your experience with customer support on the phone?",
    "Write a few sentences about doing your taxes.",
    "What is it like to move house?",
    "Describe an old laptop that keeps freezing.",
    "Give your opinion on airport security checks.",
    "Write a short note about a delayed train.",
    "What do you think of open-plan offices?",
    "Describe a cold and windy beach in winter.",
    "Tell me about a meeting that could have been an email.",
    "Write a review of a restaurant where the service was slow.",
    "How do you feel about doing laundry?",
    "Describe a traffic jam on the highway.",
    "What is your opinion of modern smartphones?",
    "Write a short story about a lost umbrella.",
    "Describe a small apartment in a big city.",
    "What do you think about working night shifts?",
    "Tell me about a rainy weekend at home.",
    "Describe the weather in November.",
    "Write a short review of a movie sequel.",
    "How was your last visit to the dentist?",
    "What do you think about group projects at school?",
    "Describe a neighbourhood under construction.",
    "Write a few sentences about a broken coffee machine.",
    "Tell me about a long flight in economy class.",
    "What is it like to learn a new language as an adult?",
    "Describe a grocery store on a busy Saturday.",
    "Write a short note about cancelled weekend plans.",
)


def builtin_prompts(n: int | None = None) -> list[str]:
    """Returns the first `n` built-in prompts.

    Args:
        n (`int`, *optional*):
            Number of prompts, between 1 and `len(BUILTIN_PROMPTS)`. All of them when `None`.

    Returns:
        `list[str]`: The prompts, in a fixed order.

    Raises:
        ValueError: If `n` is out of range.
    """
    if n is None:
        return list(BUILTIN_PROMPTS)
    if not 1 <= n <= len(BUILTIN_PROMPTS):
        raise ValueError(
            f"`n` must be between 1 and {len(BUILTIN_PROMPTS)} (the number of built-in prompts), got {n}. "
            "Pass a smaller `n`, or supply your own prompts for more."
        )
    return list(BUILTIN_PROMPTS[:n])


def apply_chat_template(tokenizer: PreTrainedTokenizerBase, prompts: list[str]) -> list[str]:
    """Wraps each prompt as a single user message with the tokenizer's chat template.

    Args:
        tokenizer (`PreTrainedTokenizerBase`):
            Tokenizer whose `chat_template` is used, if it has one.
        prompts (`list[str]`):
            Raw user prompts.

    Returns:
        `list[str]`: Templated strings ending with the assistant generation prompt, or the prompts unchanged
        when the tokenizer has no chat template.
    """
    if getattr(tokenizer, "chat_template", None) is None:
        return list(prompts)
    return [
        tokenizer.apply_chat_template([{"role": "user", "content": p}], tokenize=False, add_generation_prompt=True)
        for p in prompts
    ]
