"""A cheap deterministic reward for the server tests (``--reward e=_serve_reward:letter_e``, tests/ on PYTHONPATH)."""

from __future__ import annotations


def letter_e(texts: list[str]) -> list[float]:
    """How often the letter ``e`` appears in each full text (query + completion)."""
    return [t.count("e") / max(len(t), 1) for t in texts]


def broken(texts: list[str]) -> list[float]:
    """A reward that fails on every call (the server must answer 500 and keep serving)."""
    raise RuntimeError("this reward is broken on purpose")
