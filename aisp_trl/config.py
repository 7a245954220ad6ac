"""Configuration of AISP: one dataclass, every field documented and validated."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class AISPConfig:
    """Hyper-parameters of AISP (paper Algorithm 1, Eq. 18).

    Every field carries ``help`` metadata, so ``transformers.HfArgumentParser`` / ``trl.TrlParser`` turn
    it into a command-line flag and a YAML key. Values are checked in ``__post_init__``.

    Example:
        ```python
        >>> from aisp_trl import AISPConfig
        >>> AISPConfig(sample_size=8, n_iterations=4, sigma2=0.5, lam=0.1).total_samples
        32
        ```
    """

    sample_size: int = field(
        default=8,
        metadata={"help": "n: samples (perturbed greedy decodes) per iteration and prompt."},
    )
    n_iterations: int = field(
        default=4,
        metadata={"help": "kappa: AISP iterations; the sample budget per prompt is sample_size * n_iterations."},
    )
    sigma2: float = field(
        default=0.5,
        metadata={"help": "sigma^2: variance of the Gaussian pre-logit noise v_t ~ N(u_t, sigma^2 I)."},
    )
    lam: float = field(
        default=0.3,
        metadata={
            "help": "lambda > 0: temperature of the importance weights exp(r / lambda). Small values "
            "approach best-of-n (Theorem 3.3); choose it on the scale of your reward's spread."
        },
    )
    alpha: float = field(
        default=0.999,
        metadata={
            "help": "alpha in (0, 1]: relaxation of the reference distribution (Eq. 18). 1 drops the KL term; "
            "smaller values pull the mean back toward the base model."
        },
    )
    n_candidates: int = field(
        default=1,
        metadata={"help": "How many of the best texts generate() returns per query (at most n * kappa)."},
    )
    prompt_batch_size: int = field(
        default=1,
        metadata={
            "help": "Batched AISP: prompts searched together in one batch of prompt_batch_size * sample_size "
            "rows, each with its own mean and weights. Prompts are sorted by token length first."
        },
    )
    seed: int | None = field(
        default=None,
        metadata={"help": "Seed of the noise streams (never the global RNG). None draws a fresh seed."},
    )

    def __post_init__(self) -> None:
        for name in ("sample_size", "n_iterations", "n_candidates", "prompt_batch_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"`{name}` must be an integer >= 1, got {value!r}; pass a positive integer.")
        if self.n_candidates > self.total_samples:
            raise ValueError(
                f"`n_candidates` ({self.n_candidates}) exceeds the {self.total_samples} samples AISP draws "
                f"(sample_size * n_iterations = {self.sample_size} * {self.n_iterations}); lower "
                "`n_candidates` or raise `sample_size` / `n_iterations`."
            )
        if not _is_positive_number(self.sigma2):
            raise ValueError(f"`sigma2` must be a finite number > 0, got {self.sigma2!r}; the paper uses 0.1-0.7.")
        if not _is_positive_number(self.lam):
            raise ValueError(
                f"`lam` must be a finite number > 0, got {self.lam!r}; use a small positive value "
                "(e.g. 1e-3) for best-of-n-like weights."
            )
        if not (isinstance(self.alpha, int | float) and 0.0 < self.alpha <= 1.0):
            raise ValueError(f"`alpha` must lie in (0, 1], got {self.alpha!r}; the paper uses 0.99-0.99999.")
        if self.seed is not None and (isinstance(self.seed, bool) or not isinstance(self.seed, int)):
            raise ValueError(f"`seed` must be an integer or None, got {self.seed!r}.")

    @property
    def total_samples(self) -> int:
        """N = n * kappa, the reward evaluations spent per prompt."""
        return self.sample_size * self.n_iterations


def _is_positive_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and value > 0 and value != float("inf")
