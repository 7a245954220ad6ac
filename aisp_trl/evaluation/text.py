"""Metrics of an answer's text: n-gram diversity (paper D.1), degenerate answers (repetition, no word of the prompt's
topic: how a reward gets gamed) and coherence with the prompt (D.1, sentence-embedding cosine)."""

from __future__ import annotations

import re
from collections.abc import Hashable, Sequence

from ..rewards.embedder import SentenceEmbedder

__all__ = ["DEGENERATE_REASONS", "coherence", "degenerate_reasons", "distinct_ngram_diversity"]


# ------------------------------------------------------------------------------------------------ diversity


def distinct_ngram_diversity(
    text_or_tokens: str | Sequence[Hashable], orders: Sequence[int] = (2, 3, 4), smoothed: bool = False
) -> float:
    """Diversity of one response: ``prod_m unique m-grams / total m-grams`` over ``m`` in ``orders`` (paper D.1).

    1.0 means no repeated m-gram; repetitive text goes toward 0.

    Short texts: an order ``m`` with no m-gram at all (fewer than ``m`` tokens) contributes a factor of 1.0 (no
    m-gram is repeated), so a one-word or empty response has diversity 1.0. With ``smoothed=True`` each factor is
    ``unique / (total + 1)`` instead, as in the evaluation code of RE-Control and ARGS that the paper's numbers
    follow: then a text with fewer than ``m`` tokens scores 0.0 and every factor is below 1.

    Args:
        text_or_tokens (`str` or `Sequence[Hashable]`): a string, split on whitespace (``str.split()``; the
            reference code uses nltk's ``word_tokenize``), or an already tokenised sequence (e.g. token ids).
        orders (`Sequence[int]`, defaults to `(2, 3, 4)`): the n-gram orders ``m``, each >= 1.
        smoothed (`bool`, defaults to `False`): divide by ``total + 1`` as the reference code does.

    Returns:
        `float` in [0, 1].

    Example:
        ```python
        >>> distinct_ngram_diversity("a b a b")  # 2-grams: ab ba ab (2/3), 3-grams: aba bab (1), 4-grams: 1
        0.6666666666666666
        ```
    """
    if isinstance(orders, int) or not orders or any(isinstance(m, bool) or not isinstance(m, int) for m in orders):
        raise ValueError(f"`orders` must be a non-empty sequence of ints, got {orders!r}; e.g. orders=(2, 3, 4).")
    if any(m < 1 for m in orders):
        raise ValueError(f"`orders` must all be >= 1, got {tuple(orders)!r}.")
    tokens = text_or_tokens.split() if isinstance(text_or_tokens, str) else list(text_or_tokens)
    diversity = 1.0
    for m in orders:
        grams = [tuple(tokens[i : i + m]) for i in range(len(tokens) - m + 1)]
        if smoothed:
            diversity *= len(set(grams)) / (len(grams) + 1)
        elif grams:
            diversity *= len(set(grams)) / len(grams)
    return diversity


# ------------------------------------------------------------------------------------------- degenerate answers

DEGENERATE_REASONS: tuple[str, ...] = ("repeated_trigram", "word_run", "off_topic")
"""Why `degenerate_reasons` calls an answer degenerate: a word 3-gram that occurs twice, one word three times in a
row, or not one content word of the prompt (reward hacking by repetition or by keyword-free praise)."""

_WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")
_STOPWORDS = frozenset(
    """a about above after again against all am an and any are as at be because been before being below between
    both but by can could did do does doing down during each few for from further had has have having he her here
    hers him his how i if in into is it its itself just me more most my no nor not now of off on once only or other
    our out over own same she should so some such than that the their them then there these they this those through
    to too under until up very was we were what when where which while who whom why will with would you your yours
    please tell write describe give explain make say let us me one two like get""".split()
)


def _words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def _content_stems(text: str) -> set[str]:
    """Content words (no stop word, >= 3 letters) cut to 5 letters, so 'commute' and 'commuting' match."""
    return {w[:5] for w in _words(text) if len(w) >= 3 and w not in _STOPWORDS}


def degenerate_reasons(response: str, prompt: str | None = None) -> list[str]:
    """The reasons (from `DEGENERATE_REASONS`) the answer ``response`` to ``prompt`` is degenerate; empty when none.

    Words are lower-cased runs of letters and digits (punctuation and line breaks ignored), so '"Awesome"\n\nAwesome.
    Awesome.' is the word "awesome" three times in a row.

    - ``"repeated_trigram"``: some word 3-gram occurs at least twice;
    - ``"word_run"``: one word three (or more) times in a row;
    - ``"off_topic"``: with ``prompt``, the answer holds none of the prompt's content words (stop words aside;
      words compared on their first 5 letters). This one also catches short honest answers that paraphrase the
      prompt, so reports count each reason apart.

    Args:
        response (`str`): the answer (the completion, without the prompt).
        prompt (`str`, *optional*): the prompt text; without it ``"off_topic"`` is not checked.

    Returns:
        `list[str]`: the reasons that apply, in the order of `DEGENERATE_REASONS`.

    Example:
        ```python
        >>> degenerate_reasons('"Awesome"\n\nAwesome.\n\nAwesome.', "How do I sort a list in Python?")
        ['word_run', 'off_topic']
        ```
    """
    words = _words(response)
    reasons = []
    trigrams = [tuple(words[i : i + 3]) for i in range(len(words) - 2)]
    if len(set(trigrams)) < len(trigrams):
        reasons.append("repeated_trigram")
    if any(words[i] == words[i + 1] == words[i + 2] for i in range(len(words) - 2)):
        reasons.append("word_run")
    if prompt is not None:
        topic = _content_stems(prompt)
        if topic and not topic & _content_stems(response):
            reasons.append("off_topic")
    return reasons


# ------------------------------------------------------------------------------------------------ coherence


def coherence(
    prompts: Sequence[str], responses: Sequence[str], embedder: SentenceEmbedder | None = None
) -> list[float]:
    """Coherence of each response with its prompt: cosine similarity of their sentence embeddings (paper D.1).

    Args:
        prompts (`Sequence[str]`): the prompts.
        responses (`Sequence[str]`): one response per prompt (the completion, without the prompt).
        embedder (`SentenceEmbedder`, *optional*): defaults to a new all-MiniLM-L6-v2 `SentenceEmbedder`; build
            one and pass it to avoid reloading it on every call.

    Returns:
        `list[float]`: one value in [-1, 1] per pair; identical texts give 1.0.
    """
    if isinstance(prompts, str) or isinstance(responses, str):
        raise TypeError("`prompts` and `responses` must be lists of strings, not a single string; wrap it in a list.")
    if len(prompts) != len(responses):
        raise ValueError(
            f"`prompts` has {len(prompts)} entries and `responses` has {len(responses)}; pass one response per prompt."
        )
    embedder = embedder if embedder is not None else SentenceEmbedder()
    both = embedder.encode(list(prompts) + list(responses))  # (2P, h), unit rows
    p, r = both[: len(prompts)], both[len(prompts) :]
    return (p * r).sum(dim=-1).clamp(-1.0, 1.0).tolist()
