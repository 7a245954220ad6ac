"""Configuration of AISP: one dataclass, every field documented and validated."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from .proposals import PROPOSALS

SEARCH_SETTINGS: tuple[str, ...] = ("sigma2", "lam", "alpha", "ess_target", "proposal", "rho", "sigma_decay")
"""The `AISPConfig` fields that shape the search itself (besides the budget, batching and seed): what a benchmark
variant, a recipe flag or a server request may tune."""


@dataclass
class AISPConfig:
    """Hyper-parameters of AISP (paper Algorithm 1, Eq. 18).

    Every field carries ``help`` metadata, so ``transformers.HfArgumentParser`` / ``trl.TrlParser`` turn
    it into a command-line flag and a YAML key. Values are checked in ``__post_init__``. The defaults are those of
    the CLI and the recipes (n = 8, kappa = 4: N = 32); `AISPSampler`'s own ``sample_size`` default is 4, trl's
    ``BestOfNSampler`` default, so that a trl user who changes the class name keeps the same n.

    Example:
        ```python
        >>> from aisp_trl import AISPConfig
        >>> AISPConfig(sample_size=8, n_iterations=4).total_samples
        32
        >>> AISPConfig(lam="0.3").lam  # a fixed temperature, e.g. from the command line (the paper's mode)
        0.3
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
        default=0.25,
        metadata={
            "help": "sigma^2: variance of the Gaussian pre-logit noise v_t ~ N(u_t, sigma^2 I) per step and "
            "dimension (the paper uses 0.5-0.7 on 8B models)."
        },
    )
    lam: str = field(
        default="auto",
        metadata={
            "help": "lambda: temperature of the importance weights exp(r / lambda). 'auto' (default) chooses it at "
            "every iteration so that the weights' effective sample size is ess_target * n, which makes AISP "
            "independent of the reward's scale and offset. A number > 0 fixes it (the paper's mode; small values "
            "approach best-of-n, Theorem 3.3; it must then match your reward's spread)."
        },
    )
    ess_target: float = field(
        default=0.2,
        metadata={
            "help": "With lam='auto': target effective sample size of the weights as a fraction of n, in (0, 1)."
        },
    )
    proposal: str = field(
        default="ar1",
        metadata={
            "help": "Noise proposal: 'ar1' (default: v_t correlated over steps by rho, unit marginal variance), "
            "'iid' (the paper: v_t independent per step) or 'steering' (one vector added at every step: a search "
            "space of d instead of tau * d)."
        },
    )
    rho: float = field(default=0.9, metadata={"help": "With proposal='ar1': correlation of v_t between steps, [0, 1)."})
    sigma_decay: float = field(
        default=0.85,
        metadata={
            "help": "sigma^2 schedule: iteration k draws with sigma2 * sigma_decay^(k-1); 1 keeps it fixed (the "
            "paper), values < 1 shrink the noise to exploit around the mean."
        },
    )
    reuse_samples: bool = field(
        default=False,
        metadata={
            "help": "Update the mean from every sample drawn so far, weighted against the mixture of all past "
            "proposals (adaptive multiple importance sampling, Cornuet et al. 2012), not only the last n."
        },
    )
    alpha: float = field(
        default=0.999,
        metadata={
            "help": "alpha in (0, 1]: relaxation of the reference distribution (Eq. 18). 1 drops the KL term; "
            "smaller values pull the mean back toward the base model."
        },
    )
    kl_coef: float = field(
        default=0.0,
        metadata={
            "help": "beta >= 0: search the KL-regularised objective s = r - beta * KL (the paper's Eq. 3-6), KL = "
            "-log P_base(y|x) of each sample under the base model, read off its own decode (HF: the unperturbed head "
            "over the recorded pre-logits; vLLM: its raw log-probs). The weights, lam='auto' and the returned best use "
            "s; 0 is the plain reward."
        },
    )
    kl_per_token: bool = field(
        default=False,
        metadata={
            "help": "With kl_coef: divide each sample's KL by its length (a per-token penalty) instead of summing."
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
        self.lam = _parse_lam(self.lam)
        if not (isinstance(self.ess_target, int | float) and 0.0 < self.ess_target < 1.0):
            raise ValueError(f"`ess_target` must lie in (0, 1), got {self.ess_target!r}; 0.5 is a good default.")
        if self.proposal not in PROPOSALS:
            raise ValueError(f"`proposal` must be one of {list(PROPOSALS)}, got {self.proposal!r}.")
        if isinstance(self.rho, bool) or not isinstance(self.rho, int | float) or not 0.0 <= self.rho < 1.0:
            raise ValueError(f"`rho` must lie in [0, 1), got {self.rho!r}; e.g. 0.9.")
        if not (isinstance(self.sigma_decay, int | float) and 0.0 < self.sigma_decay <= 1.0):
            raise ValueError(
                f"`sigma_decay` must lie in (0, 1], got {self.sigma_decay!r}; 1 keeps sigma2 fixed, 0.8 shrinks it."
            )
        if not (isinstance(self.alpha, int | float) and 0.0 < self.alpha <= 1.0):
            raise ValueError(f"`alpha` must lie in (0, 1], got {self.alpha!r}; the paper uses 0.99-0.99999.")
        if not (
            isinstance(self.kl_coef, int | float)
            and not isinstance(self.kl_coef, bool)
            and 0 <= self.kl_coef < float("inf")
        ):
            raise ValueError(
                f"`kl_coef` must be a finite number >= 0, got {self.kl_coef!r}; 0 searches the plain reward."
            )
        if self.seed is not None and (isinstance(self.seed, bool) or not isinstance(self.seed, int)):
            raise ValueError(f"`seed` must be an integer or None, got {self.seed!r}.")

    def settings(self) -> dict[str, object]:
        """The configuration as recorded with a run (``asdict``), the KL options only when they are set, so that
        runs recorded before they existed still match a plain-reward run."""
        values = asdict(self)
        for name, default in _RECORDED_WHEN_SET.items():
            if values[name] == default:
                del values[name]
        return values

    @property
    def total_samples(self) -> int:
        """N = n * kappa, the reward evaluations spent per prompt."""
        return self.sample_size * self.n_iterations


_RECORDED_WHEN_SET = {"kl_coef": 0.0, "kl_per_token": False}


def _parse_lam(value: object) -> str | float:
    """``"auto"`` or a finite number > 0 (also from a command-line string such as ``"0.3"``)."""
    if isinstance(value, str):
        if value.strip().lower() == "auto":
            return "auto"
        try:
            value = float(value)
        except ValueError:
            raise ValueError(
                f"`lam` must be 'auto' or a number > 0, got {value!r}; e.g. lam='auto' or lam=0.3."
            ) from None
    if not _is_positive_number(value):
        raise ValueError(
            f"`lam` must be 'auto' or a finite number > 0, got {value!r}; use 'auto', or a small positive value "
            "(e.g. 1e-3) for best-of-n-like weights."
        )
    return float(value)  # type: ignore[arg-type]


def _is_positive_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and value > 0 and value != float("inf")
