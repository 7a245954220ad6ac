"""AISP against best-of-N at the same number of samples, with the statistics a reviewer asks for (issue 7).

Every run is one *unit* (reward, method, seed) over the same prompts, saved as its own JSON under
``<output_dir>/units/`` as soon as it finishes, so the script resumes where it stopped (kill it, run it again).
A unit stores each prompt's rewards of all ``N`` samples in order, the chosen answer, its per-token NLL under the
base model (fluency) and its MiniLM coherence with the prompt. The baselines' samples do not depend on the reward:
they are decoded once per (method, seed) and re-scored for each reward (``<output_dir>/samples/``).

The report (``report.json``, ``report.md``, ``curves.png``) gives, per reward:

- mean best reward at N = 32, 64, 128 with a 95% bootstrap CI over prompts (values averaged over seeds first);
  AISP's value at N is its best so far after N samples, BoN's is the expected best of N of its samples (every
  N-subset of the run's samples, lower variance than "the first N");
- each AISP method against BoN (top-p) and BoN (N): the paired mean difference with its 95% CI and the win / tie /
  loss rates over (prompt, seed) pairs;
- how many BoN (top-p) samples reach AISP's mean reward at the full budget (interpolated on BoN's curve);
- the chosen answers' mean NLL per token under the base model, coherence and n-gram diversity, so that no win comes
  from broken text (repetition has a low NLL: diversity and coherence are what flag it).

Methods: ``aisp`` (the package defaults: nothing passed but n, kappa and the seed), ``bon_top_p`` (trl's
BestOfNSampler, top-p 0.9, T = 1), ``bon_gaussian`` (BoN (N), i.i.d. noise, sigma2 = 0.5), ``bon_aisp_proposal``
(the control: N draws from AISP's own proposal, sigma2 and rho, i.e. AISP with kappa = 1 at the whole budget, so
"AISP vs bon_aisp_proposal" is what adapting the mean adds), ``greedy``, and AISP variants given as
``--variants name:key=value,key=value`` (any `AISPConfig` field, e.g. ``steer:proposal=steering``). Each prompt's
record also holds the tokens its samples generated, for reward-per-token curves.

```bash
# the headline (defaults vs both BoNs, 3 seeds, 24 held-out prompts, N = 128 = 16 x 8, 32 tokens, 3 rewards)
python benchmarks/bench_vs_bon.py --rewards vader relevance judge --seeds 0 1 2
# tuning / exploratory variants on the tune prompts (never the reported ones), one seed
python benchmarks/bench_vs_bon.py --prompt_source general:tune --num_prompts 16 --output_dir outputs/tune \\
    --methods aisp bon_top_p --variants paper:lam=0.3 steer:proposal=steering --seeds 0
# smoke test (~1 min)
python benchmarks/bench_vs_bon.py --num_prompts 2 --sample_size 2 --n_iterations 2 --max_new_tokens 4 \\
    --rewards vader --output_dir /tmp/smoke
```
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import torch
from _common import UnitStore, atomic_write_json, rescore_samples, reward_key
from trl import TrlParser

from aisp_trl._validation import check_int, check_positive
from aisp_trl.config import AISPConfig
from aisp_trl.data import load_prompts, prompt_text
from aisp_trl.decoding import HFDecoder
from aisp_trl.evaluation.metrics import token_nll
from aisp_trl.evaluation.report import agg_figure, format_ci, write_report_files
from aisp_trl.evaluation.stats import (
    bootstrap_ci,
    expected_best_of,
    expected_best_of_curve,
    format_paired,
    paired_comparison,
    samples_to_match,
)
from aisp_trl.evaluation.text import coherence, degenerate_reasons, distinct_ngram_diversity
from aisp_trl.models import EMBEDDED_MODEL, load_model_and_tokenizer
from aisp_trl.pipeline import tokenize_prompts
from aisp_trl.rewards import SentenceEmbedder, build_reward, check_reward_spec
from aisp_trl.samplers.registry import MethodOptions, method_label
from aisp_trl.samplers.registry import build_sampler as registry_build_sampler
from aisp_trl.types import AISPResult, Sample

CONTROL = "bon_aisp_proposal"  # AISP's first iteration at the whole budget: what the proposal alone gives
BASELINES = ("bon_top_p", "bon_gaussian", CONTROL, "greedy")  # reward-independent samples: decoded once, re-scored
BEST_OF_N = ("bon_top_p", "bon_gaussian", CONTROL)  # scored by the expected best of N; AISP by its best so far
LABELS = {"aisp": "AISP (defaults)"} | {m: method_label(m) for m in BASELINES}  # labels from the method table
_CONFIG_FIELDS = {f.name: f.type for f in fields(AISPConfig)}


@dataclass
class VsBonArguments:
    """What to compare, on which prompts, at which budget (every flag also reads from a YAML ``--config``)."""

    model_name_or_path: str = field(default=EMBEDDED_MODEL, metadata={"help": "Causal LM (default: embedded SmolLM2)."})
    rewards: list[str] = field(default_factory=lambda: ["vader", "relevance", "judge"], metadata={"help": "Rewards."})
    methods: list[str] = field(
        default_factory=lambda: ["aisp", "bon_top_p", "bon_gaussian", "greedy"],
        metadata={"help": f"Methods to run: aisp, {', '.join(BASELINES)} (the control {CONTROL} only when named)."},
    )
    variants: list[str] = field(
        default_factory=list, metadata={"help": "AISP variants 'name:key=value,key=value' (AISPConfig fields)."}
    )
    bon_variants: list[str] = field(
        default_factory=list,
        metadata={"help": "BoN (top-p) variants 'name:temperature=T,top_p=P[,samples=M]' (a tuned BoN; samples: its "
                  "own N, a multiple of n, e.g. 512 for the large-N curve)."},
    )  # fmt: skip
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2], metadata={"help": "Seeds of the sampling methods."})
    prompt_source: str = field(default="general:bench", metadata={"help": "Prompt source, e.g. general:fresh."})
    num_prompts: int = field(default=24, metadata={"help": "Prompts (the first ones of the source)."})
    sample_size: int = field(default=16, metadata={"help": "n: AISP samples per iteration."})
    n_iterations: int = field(default=8, metadata={"help": "kappa: AISP iterations; N = n * kappa."})
    prompt_batch_size: int = field(default=8, metadata={"help": "Batched AISP: prompts per batch."})
    max_new_tokens: int = field(default=32, metadata={"help": "Horizon tau (new tokens), every method."})
    bon_sigma2: float = field(default=0.5, metadata={"help": "sigma^2 of BoN (N) (the paper's best)."})
    top_p: float = field(default=0.9, metadata={"help": "BoN (top-p) nucleus mass."})
    temperature: float = field(default=1.0, metadata={"help": "BoN (top-p) sampling temperature."})
    kl_coef: float = field(
        default=0.0,
        metadata={"help": "beta: every method searches / selects by r - beta * KL (KL = -log P_base(y|x); AISP's "
                  "weights, BoN's choice: RBoN); 0 is the plain reward."},
    )  # fmt: skip
    kl_per_token: bool = field(default=False, metadata={"help": "With --kl_coef: the KL per token, not summed."})
    checkpoints: list[int] = field(default_factory=lambda: [32, 64, 128], metadata={"help": "N values in the table."})
    threads: int = field(default=2, metadata={"help": "torch.set_num_threads (pinned for timing)."})
    output_dir: str = field(default="outputs/bench-vs-bon", metadata={"help": "Units and the report go here."})
    samples_dir: str | None = field(
        default=None,
        metadata={"help": "The baselines' samples cache (default: <output_dir>/samples); point a --kl_coef run at "
                  "the plain run's cache to rank the same BoN samples by r - beta * KL (RBoN) for free."},
    )  # fmt: skip
    report_only: bool = field(default=False, metadata={"help": "Only rebuild the report from saved units."})

    def __post_init__(self) -> None:
        for name in ("num_prompts", "sample_size", "n_iterations", "prompt_batch_size", "max_new_tokens", "threads"):
            check_int(name, getattr(self, name))
        for name in ("rewards", "methods", "seeds", "checkpoints"):
            if not getattr(self, name):
                raise ValueError(f"`{name}` is empty; give at least one (e.g. the default {name}).")
        for name in self.rewards:  # a bad reward name fails before the model loads
            check_reward_spec(name)
        unknown = [m for m in self.methods if m not in LABELS]
        if unknown:
            raise ValueError(f"`methods` has unknown {unknown}; use {list(LABELS)}, or define variants with "
                             "--variants / --bon_variants.")  # fmt: skip
        if not 0.0 < self.top_p <= 1.0 or not self.temperature > 0.0:
            raise ValueError(
                f"`top_p` must be in (0, 1] and `temperature` > 0, got {self.top_p} and {self.temperature}."
            )
        check_positive("kl_coef", self.kl_coef, allow_zero=True)
        variants = parse_variants(self.variants)
        parse_bon_variants(self.bon_variants, self.sample_size, self.sample_size * self.n_iterations, tuple(variants))


def make_parser() -> TrlParser:
    return TrlParser((VsBonArguments,))


def parse_args(argv: list[str] | None = None) -> VsBonArguments:
    """The arguments from ``argv`` (default: the command line), YAML ``--config`` included, validated."""
    return make_parser().parse_args_and_config(args=argv)[0]


def parse_variants(specs: list[str], taken: tuple[str, ...] = ()) -> dict[str, dict[str, Any]]:
    """``["steer:proposal=steering,rho=0.5"]`` -> ``{"steer": {"proposal": "steering", "rho": 0.5}}`` (validated)."""
    variants = _parse_specs(specs, "--variants", taken)
    for name, overrides in variants.items():
        bad = [k for k in overrides if k not in _CONFIG_FIELDS or k in ("sample_size", "n_iterations", "seed",
                                                                          "prompt_batch_size")]  # fmt: skip
        if bad:
            raise ValueError(f"`--variants` {name!r}: {bad[0]!r} is not a tunable AISPConfig field.")
        AISPConfig(**overrides)  # validates, naming the bad field
    return variants


BON_VARIANT_KEYS = ("temperature", "top_p", "samples")


def parse_bon_variants(specs: list[str], sample_size: int, total: int, taken: tuple[str, ...] = ()) -> dict:
    """``["tuned:temperature=0.8,top_p=0.95"]`` -> ``{"tuned": {"temperature": 0.8, "top_p": 0.95}}``: BoN (top-p)
    runs with their own temperature, nucleus mass and, optionally, their own number of samples (``samples``, a
    multiple of ``sample_size`` and at least the budget ``total``: the large-N curve)."""
    variants = _parse_specs(specs, "--bon_variants", taken)
    for name, overrides in variants.items():
        bad = [k for k in overrides if k not in BON_VARIANT_KEYS]
        if bad:
            raise ValueError(f"`--bon_variants` {name!r}: {bad[0]!r} is not one of {list(BON_VARIANT_KEYS)}.")
        samples = overrides.get("samples", total)
        if not isinstance(samples, int) or samples < total or samples % sample_size:
            raise ValueError(
                f"`--bon_variants` {name!r}: samples={samples!r}; use a multiple of --sample_size ({sample_size}) "
                f"of at least the budget N = {total}."
            )
        MethodOptions(**{k: v for k, v in overrides.items() if k != "samples"})
        if not 0.0 < overrides.get("top_p", 0.9) <= 1.0 or overrides.get("temperature", 1.0) <= 0.0:
            raise ValueError(f"`--bon_variants` {name!r}: top_p must be in (0, 1] and temperature > 0.")
    return variants


def _parse_specs(specs: list[str], flag: str, taken: tuple[str, ...]) -> dict[str, dict[str, Any]]:
    variants: dict[str, dict[str, Any]] = {}
    for spec in specs:
        name, _, body = spec.partition(":")
        if not name or name in LABELS or name in variants or name in taken:
            raise ValueError(f"`{flag}` entry {spec!r} needs a new name before ':' (not {[*LABELS, *taken]}).")
        overrides: dict[str, Any] = {}
        for item in filter(None, body.split(",")):
            key, _, value = item.partition("=")
            overrides[key] = _parse_value(value)
        variants[name] = overrides
    return variants


def _parse_value(value: str) -> Any:
    if value.lower() in ("true", "false"):
        return value.lower() == "true"
    for cast in (int, float):
        try:
            return cast(value)
        except ValueError:
            pass
    return value


# ------------------------------------------------------------------------------------------------- units


def build_sampler(kind: str, overrides: dict[str, Any], seed: int, model, tokenizer, reward, args) -> Any:
    """The sampler of one method at the budget ``N = n * kappa``, from the package's method table: ``kind`` is the
    table's method; an AISP variant is ``aisp`` with its `AISPConfig` overrides, a BoN variant ``bon_top_p`` with
    its own temperature, top-p and number of samples."""
    aisp, bon = ({}, dict(overrides)) if kind == "bon_top_p" else (overrides, {})
    total = bon.pop("samples", args.sample_size * args.n_iterations)
    config = AISPConfig(sample_size=args.sample_size, n_iterations=total // args.sample_size,
                        prompt_batch_size=args.prompt_batch_size, seed=seed, **_kl(args), **aisp)  # fmt: skip
    options = MethodOptions(
        top_p=args.top_p, temperature=args.temperature, bon_sigma2=args.bon_sigma2, bon_prompt_batch_size=1
    )
    options = dataclasses.replace(options, **bon)
    return registry_build_sampler(kind, model, tokenizer, reward, args.max_new_tokens, config, options)


_CACHED = (("texts", "text"), ("completions", "completion"), ("completion_ids", "completion_ids"))
"""What the samples cache keeps of a baseline's samples: everything but the reward, plus each sample's base NLL
(``nlls``, -log P_base(y|x) summed) once a ``--kl_coef`` run needed it: it depends on neither reward nor beta."""
_KL_KEYS = ("kl_coef", "kl_per_token")


def _kl(args: VsBonArguments) -> dict[str, Any]:
    """The KL options of every method's `AISPConfig` (a variant's overrides may replace them)."""
    return {"kl_coef": args.kl_coef, "kl_per_token": args.kl_per_token}


def _without_kl(record: dict[str, Any] | None) -> dict[str, Any] | None:
    """Settings without beta: a baseline decodes the same samples whatever beta ranks them by."""
    return None if record is None else {k: v for k, v in record.items() if k not in _KL_KEYS}


def search_or_rescore(method, kind, overrides, seed, model, tokenizer, reward, prompts, queries, args):
    """``(results, seconds)``. The baselines' samples depend on neither the reward nor beta (``--kl_coef`` only
    changes which one is chosen: RBoN): they are decoded once per (method, seed), kept under
    ``<output_dir>/samples/`` and re-scored for every other reward and beta (the reward's scoring time is counted,
    and with beta > 0 the one teacher-forced pass that gives each sample's base NLL, saved with the samples).
    AISP's samples depend on both, so AISP always searches."""
    cache = Path(args.samples_dir or Path(args.output_dir) / "samples") / method / f"seed{seed}.json"
    if kind in BASELINES and cache.is_file():
        saved = json.loads(cache.read_text())
        same = _without_kl(saved.get("aisp_config")) == _without_kl(aisp_config_of(kind, {}, args))
        same &= _without_kl(saved["settings"]) == _without_kl(settings_of(args))
        if same and saved.get("overrides", {}) == overrides:
            if args.kl_coef and "nll_seconds" not in saved:
                _add_base_nll(saved, model, tokenizer, queries)  # timed into saved["nll_seconds"], counted below
                atomic_write_json(cache, saved)
            start = time.perf_counter()
            results = []
            for prompt, query, rows in zip(prompts, queries, saved["prompts"], strict=True):
                rewards, _ = rescore_samples(reward, prompt, rows["completions"], rows["texts"])
                kls = _kls(rows, args) if args.kl_coef else [None] * len(rewards)
                samples = [
                    Sample(t, c, ids, r, 1, i, kl=k, score=None if k is None else r - args.kl_coef * k)
                    for i, (t, c, ids, r, k) in enumerate(
                        zip(rows["texts"], rows["completions"], rows["completion_ids"], rewards, kls, strict=True)
                    )
                ]
                results.append(AISPResult(prompt, query, args.max_new_tokens, samples, ess=[float(len(samples))]))
            seconds = saved["seconds"] + (saved["nll_seconds"] if args.kl_coef else 0.0)
            return results, seconds + time.perf_counter() - start
    sampler = build_sampler(kind, overrides, seed, model, tokenizer, reward, args)
    start = time.perf_counter()
    results = sampler.search(queries, prompts=prompts)
    seconds = time.perf_counter() - start
    if kind in BASELINES:
        rows = [{key: [getattr(x, name) for x in r.samples] for key, name in _CACHED} for r in results]
        record = {"settings": settings_of(args), "aisp_config": aisp_config_of(kind, {}, args), "seconds": seconds}
        record |= {"overrides": overrides} if overrides else {}
        if args.kl_coef and all(x.kl is not None for r in results for x in r.samples):
            # the base NLL came with the decode (greedy has none: it is added when a beta run first needs it)
            for row, r in zip(rows, results, strict=True):
                row["nlls"] = [x.kl * (max(len(x.completion_ids), 1) if args.kl_per_token else 1) for x in r.samples]
            record["nll_seconds"] = 0.0
        atomic_write_json(cache, record | {"prompts": rows})
    return results, seconds


def _add_base_nll(saved: dict[str, Any], model, tokenizer, queries: list[list[int]]) -> None:
    """Each cached sample's ``-log P_base(y|x)`` (one teacher-forced pass per prompt), into ``saved`` with its time."""
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    decoder = HFDecoder(model, pad)
    start = time.perf_counter()
    for query, rows in zip(queries, saved["prompts"], strict=True):
        rows["nlls"] = decoder.response_nll([query] * len(rows["completion_ids"]), rows["completion_ids"])
    saved["nll_seconds"] = time.perf_counter() - start


def _kls(rows: dict[str, Any], args: VsBonArguments) -> list[float]:
    """The cached samples' KL estimates: the summed base NLL, or per token with ``--kl_per_token``."""
    if not args.kl_per_token:
        return list(rows["nlls"])
    return [n / max(len(ids), 1) for n, ids in zip(rows["nlls"], rows["completion_ids"], strict=True)]


def run_unit(method, kind, overrides, reward_name, seed, model, tokenizer, reward, embedder, prompts, queries,
             args) -> dict:  # fmt: skip
    """Runs one (reward, method, seed) over every prompt; returns the unit record."""
    results, seconds = search_or_rescore(method, kind, overrides, seed, model, tokenizer, reward, prompts, queries,
                                         args)  # fmt: skip
    best = [r.best for r in results]
    nll = [token_nll(model, q, b.completion_ids) for q, b in zip(queries, best, strict=True)]
    coh = coherence(prompts, [b.completion for b in best], embedder)
    return {
        "reward": reward_name,
        "method": method,
        "overrides": overrides,
        "seed": seed,
        "seconds": seconds,
        "prompts": [
            {
                "prompt": p,
                "rewards": [s.reward for s in r.samples],  # every sample, in order of generation
                # with --kl_coef: each sample's KL and score (what the method ranked by), and the chosen one's KL
                **(
                    {"kls": [s.kl for s in r.samples], "scores": [s.score for s in r.samples], "best_kl": b.kl}
                    if b.kl is not None
                    else {}
                ),  # fmt: skip
                "tokens": sum(len(s.completion_ids) for s in r.samples),  # generated tokens, every sample
                "best_reward": b.reward,
                "best_completion": b.completion,
                "best_tokens": len(b.completion_ids),
                "nll_per_token": n,
                "coherence": c,
                "lam": r.lam,
                "ess": r.ess,
            }
            for p, r, b, n, c in zip(prompts, results, best, nll, coh, strict=True)
        ],
    }


def aisp_config_of(kind: str, overrides: dict[str, Any], args: VsBonArguments) -> dict[str, Any] | None:
    """The full AISP configuration a unit runs with (package defaults + overrides), ``None`` for the baselines but
    the control, which draws from AISP's proposal.

    Stored in every AISP unit and checked on resume: a unit made before a default changed must not pass for the
    new defaults."""
    if kind in BASELINES and kind != CONTROL:
        return None
    config = AISPConfig(sample_size=args.sample_size, n_iterations=args.n_iterations, **_kl(args), **overrides)
    config = config.settings()
    for key in ("seed", "prompt_batch_size", "n_candidates"):  # do not change what is searched
        config.pop(key)
    return config


def settings_of(args: VsBonArguments) -> dict[str, Any]:
    """What must not change between a unit and the units it is compared with."""
    keys = ("model_name_or_path", "prompt_source", "num_prompts", "sample_size", "n_iterations", "max_new_tokens",
            "bon_sigma2", "top_p")  # fmt: skip
    settings = {k: getattr(args, k) for k in keys}
    if args.temperature != 1.0:  # recorded when it is not the default, so units made at T = 1 keep matching
        settings["temperature"] = args.temperature
    if args.kl_coef:  # likewise: units of the plain reward keep matching
        settings |= {"kl_coef": args.kl_coef, "kl_per_token": args.kl_per_token}
    return settings


# ------------------------------------------------------------------------------------------------ report


def best_at(rewards: list[float], kind: str, n: int) -> float:
    """Best reward at ``n`` samples: AISP's best so far (samples in order), BoN's expected best of ``n``."""
    if kind == "greedy":
        return rewards[0]
    if kind in BEST_OF_N:
        return expected_best_of(rewards, n)
    finite = [r for r in rewards[:n] if math.isfinite(r)]
    return max(finite) if finite else math.nan


def curve_of(rewards: list[float], kind: str) -> list[float]:
    if kind in BEST_OF_N:
        return expected_best_of_curve(rewards)
    curve, best = [], -math.inf
    for r in rewards:
        best = max(best, r) if math.isfinite(r) else best
        curve.append(best)
    return curve


def checkpoints_of(args: VsBonArguments) -> list[int]:
    """The table's sample counts: the ``--checkpoints`` within the budget, and the budget ``N = n * kappa`` itself
    (the paired comparisons are made there)."""
    total = args.sample_size * args.n_iterations
    return sorted({c for c in args.checkpoints if c <= total} | {total})


def _objectives(prompt_record: dict[str, Any]) -> list[float]:
    """What a method ranked its samples by: their scores (``--kl_coef``), else their rewards."""
    return prompt_record.get("scores") or prompt_record["rewards"]


def _repetitive(prompt_record: dict[str, Any]) -> bool:
    """Whether a unit's chosen answer repeats itself (a word 3-gram twice, or a word three times in a row)."""
    reasons = degenerate_reasons(prompt_record["best_completion"])
    return bool({"repeated_trigram", "word_run"} & set(reasons))


def _chosen_kl(prompt_record: dict[str, Any], args: VsBonArguments) -> float:
    """The chosen answer's KL estimate: as the method ranked it (``--kl_coef``), else from its per-token NLL under
    the base model (``-log P_base(y|x)`` summed, or per token with ``--kl_per_token``)."""
    if "best_kl" in prompt_record:
        return prompt_record["best_kl"]
    per_token = prompt_record["nll_per_token"]
    return per_token if args.kl_per_token else per_token * prompt_record["best_tokens"]


def build_report(units: list[dict], args: VsBonArguments, kinds: dict[str, str]) -> dict[str, Any]:
    """Aggregates the saved units into the tables of the report (per reward); ``kinds`` maps each method (or
    variant) to its method in the package's table."""
    report: dict[str, Any] = {"settings": settings_of(args), "rewards": {}}
    total = args.sample_size * args.n_iterations
    checkpoints = checkpoints_of(args)
    for reward in args.rewards:
        by_method = {m: sorted((u for u in units if u["reward"] == reward and u["method"] == m),
                               key=lambda u: u["seed"]) for m in kinds}  # fmt: skip
        by_method = {m: us for m, us in by_method.items() if us}
        if not by_method:
            continue
        section: dict[str, Any] = {"methods": {}, "paired": {}, "curves": {}}
        # method -> {N: per seed, per prompt: the best value}; and per seed, per prompt: repetitive answers as greedy
        tables: dict[str, dict[int, list[list[float]]]] = {}
        guarded_tables: dict[str, list[list[float]]] = {}
        if "greedy" in by_method:  # deterministic: one unit (runs made one seed at a time may hold several)
            by_method["greedy"] = by_method["greedy"][:1]
        greedy = [p["best_reward"] for p in by_method["greedy"][0]["prompts"]] if "greedy" in by_method else None
        for method, us in by_method.items():
            # the value at N of what the method optimised: the score r - beta * KL with --kl_coef, else the reward
            kind = kinds[method]
            table = {n: [[best_at(_objectives(p), kind, n) for p in u["prompts"]] for u in us] for n in checkpoints}
            row: dict[str, Any] = {"seeds": [u["seed"] for u in us], "seconds": sum(u["seconds"] for u in us) / len(us)}
            # the cost axes: samples drawn, generated tokens (every sample) per prompt, seconds per run
            row["samples"] = len(us[0]["prompts"][0]["rewards"])
            row["tokens"] = sum(p["tokens"] for u in us for p in u["prompts"]) / (len(us) * len(us[0]["prompts"]))
            for n, per_seed in table.items():
                per_prompt = torch.tensor(per_seed).nanmean(0).tolist()
                row[f"N={n}"] = bootstrap_ci(per_prompt)
            for key in ("nll_per_token", "coherence"):
                values = torch.tensor([[p[key] for p in u["prompts"]] for u in us]).nanmean(0).tolist()
                row[key] = bootstrap_ci(values)
            # repeated n-grams: low NLL does not flag "great great great ...", this does (paper D.1)
            diversity = [[distinct_ngram_diversity(p["best_completion"]) for p in u["prompts"]] for u in us]
            row["diversity"] = bootstrap_ci(torch.tensor(diversity).mean(0).tolist())
            # chosen answers that game the reward by repetition, or share no word with the prompt (counted apart)
            reasons = [degenerate_reasons(p["best_completion"], p["prompt"]) for u in us for p in u["prompts"]]
            row["answers"] = len(reasons)
            row["degenerate"] = sum(_repetitive(p) for u in us for p in u["prompts"])
            row["off_topic"] = sum("off_topic" in r for r in reasons)
            # a repetitive chosen answer counts as if the method had answered greedily; not for a BoN variant with
            # more samples than the budget: its chosen answer is the best of all of them, not of N
            if greedy is not None and row["samples"] <= total:
                guarded = [[greedy[j] if _repetitive(p) else p["best_reward"] for j, p in enumerate(u["prompts"])]
                           for u in us]  # fmt: skip
                row["degenerate_as_greedy"] = bootstrap_ci(torch.tensor(guarded).nanmean(0).tolist())
                guarded_tables[method] = guarded
            if all("best_kl" in p or "best_tokens" in p for u in us for p in u["prompts"]):
                # the chosen answers' own reward and KL, at any beta (the frontier's two axes)
                for key, value in (("reward", lambda p: p["best_reward"]), ("kl", lambda p: _chosen_kl(p, args))):
                    values = torch.tensor([[value(p) for p in u["prompts"]] for u in us]).nanmean(0).tolist()
                    row[f"chosen_{key}"] = bootstrap_ci(values)
            curves = torch.tensor([[curve_of(_objectives(p), kind) for p in u["prompts"]] for u in us])
            section["curves"][method] = curves.nanmean(dim=(0, 1)).tolist()
            section["methods"][method] = row
            tables[method] = table
        for method in by_method:
            if kinds[method] in BASELINES:
                continue
            target = section["methods"][method][f"N={total}"][0]
            for baseline in (m for m in by_method if kinds[m] in BASELINES):
                a, b = tables[method][total], tables[baseline][total]
                if kinds[baseline] == "greedy":
                    b = b * len(a)  # deterministic: the one greedy run pairs with every seed
                common = min(len(a), len(b))
                paired = paired_comparison(a[:common], b[:common])
                if kinds[baseline] in BEST_OF_N:  # samples (and seconds, tokens) the baseline needs to match
                    base = section["methods"][baseline]
                    paired["samples_to_match"] = samples_to_match(section["curves"][baseline], target)
                    paired["seconds_to_match"] = paired["samples_to_match"] * base["seconds"] / base["samples"]
                section["paired"][f"{method} vs {baseline}"] = paired
                if method in guarded_tables and baseline in guarded_tables and kinds[baseline] != "greedy":
                    # the chosen answers' rewards with each repetitive one scored as greedy's, paired the same way
                    ga, gb = guarded_tables[method], guarded_tables[baseline]
                    section.setdefault("paired_as_greedy", {})[f"{method} vs {baseline}"] = paired_comparison(
                        ga[:common], gb[:common]
                    )
            if "bon_top_p" in section["curves"]:
                section["methods"][method]["bon_top_p_samples_to_match"] = samples_to_match(
                    section["curves"]["bon_top_p"], target
                )
        report["rewards"][reward] = section
    return report


def report_markdown(report: dict[str, Any], args: VsBonArguments) -> str:
    total = args.sample_size * args.n_iterations
    labels = labels_of(args)
    checkpoints = checkpoints_of(args)
    s = report["settings"]
    lines = [
        f"AISP vs best-of-N: {s['num_prompts']} prompts of `{s['prompt_source']}`, {s['max_new_tokens']} new tokens, "
        f"N = {s['sample_size']}·{s['n_iterations']} = {total}, model `{s['model_name_or_path']}`. Best reward: mean "
        "[95% bootstrap CI over prompts] of the seed-averaged value. NLL: the chosen answer's mean per-token "
        "negative log-likelihood under the base model (lower = more fluent, but repetition is cheap); coherence: "
        "MiniLM cosine of prompt and answer; diversity: distinct 2-4-grams of the answer (1 = no repeats, "
        "repetitive text toward 0); repetitive / off-topic: chosen answers (over prompts and seeds) with a word "
        "3-gram twice or a word three times in a row, and those sharing no content word with the prompt "
        "(`aisp_trl.evaluation.text.degenerate_reasons`); 'repetitive answers as greedy': the best reward at the full "
        "budget with each repetitive chosen answer scored as that prompt's greedy answer (a win by repetition "
        "counts for nothing). A BoN variant with more samples than N is scored at N by its expected best of N; its "
        "NLL, coherence, diversity and repetitive counts describe its best of all its samples.",
        "",
    ]
    if s.get("kl_coef"):
        lines[0] += (
            f" KL-regularised run (beta = {s['kl_coef']}): the N = ... columns and the paired differences are the best "
            f"score s = r - {s['kl_coef']} * KL (what every method ranked by), KL = -log P_base(y|x) "
            f"{'per token' if s.get('kl_per_token') else 'summed over the answer'}; 'chosen reward' and 'chosen KL' "
            "are the reward and KL of the answer each method returned."
        )
    for reward, section in report["rewards"].items():
        head = " | ".join(f"N={n}" for n in checkpoints)
        lines += [
            f"### {reward}",
            "",
            f"| method | seeds | {head} | N={total}, repetitive answers as greedy | NLL / token | coherence "
            "| diversity | repetitive / off-topic answers | chosen reward | chosen KL | BoN (top-p) N to match "
            "| s / run |",
            "|---|---:|" + "---:|" * len(checkpoints) + "---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for method, row in section["methods"].items():
            cells = " | ".join(format_ci(row[f"N={n}"]) for n in checkpoints)
            match = row.get("bon_top_p_samples_to_match")
            match_text = "—" if match is None else (f"> {total}" if math.isinf(match) else f"{match:.0f}")
            metrics = " | ".join(format_ci(row[key], 2) for key in ("nll_per_token", "coherence", "diversity"))
            chosen = " | ".join(
                format_ci(row[key], digits) if key in row else "—"
                for key, digits in (("chosen_reward", 3), ("chosen_kl", 1))
            )
            lines.append(
                f"| {labels.get(method, method)} | {len(row['seeds'])} | {cells} "
                f"| {format_ci(row['degenerate_as_greedy']) if 'degenerate_as_greedy' in row else '—'} | {metrics} "
                f"| {row['degenerate']} / {row['off_topic']} of {row['answers']} | {chosen} | {match_text} "
                f"| {row['seconds']:.0f} |"
            )
        if section["paired"]:
            lines += ["", f"| paired at N = {total} | mean difference [95% CI] | wins / ties / losses | pairs "
                      "| baseline's N to match | its seconds to match (method's) |",
                      "|---|---:|---:|---:|---:|---:|"]  # fmt: skip
            for name, p in section["paired"].items():
                method, baseline = name.split(" vs ")
                label = f"{labels.get(method, method)} − {labels.get(baseline, baseline)}"
                match, secs = "—", "—"
                if "samples_to_match" in p:
                    found = math.isfinite(p["samples_to_match"])
                    n_max = section["methods"][baseline]["samples"]
                    match = f"{p['samples_to_match']:.0f}" if found else f"> {n_max}"
                    own, most = section["methods"][method]["seconds"], section["methods"][baseline]["seconds"]
                    secs = f"{p['seconds_to_match']:.0f} ({own:.0f})" if found else f"> {most:.0f} ({own:.0f})"
                lines.append(f"| {label} | {format_paired(p)} | {p['pairs']} | {match} | {secs} |")
            for name, p in section.get("paired_as_greedy", {}).items():
                method, baseline = name.split(" vs ")
                label = f"{labels.get(method, method)} − {labels.get(baseline, baseline)}"
                lines.append(f"| {label}: rewards, repetitive as greedy | {format_paired(p)} | {p['pairs']} | — | — |")
        lines.append("")
    return "\n".join(lines)


def labels_of(args: VsBonArguments) -> dict[str, str]:
    """Table labels: the method table's, and a BoN variant's with its settings."""
    bon = parse_bon_variants(args.bon_variants, args.sample_size, args.sample_size * args.n_iterations)
    named = {
        name: f"BoN (top-p) {name}: T {o.get('temperature', args.temperature)}, p {o.get('top_p', args.top_p)}"
        + (f", N {o['samples']}" if "samples" in o else "")
        for name, o in bon.items()
    }  # fmt: skip
    return LABELS | named


def plot(report: dict[str, Any], path: Path) -> None:
    """Best reward (mean over prompts and seeds) per reward (columns) against samples, seconds and generated tokens
    (rows); a method's seconds and tokens at ``m`` samples are its run's per-sample seconds and tokens times ``m``."""
    rewards, labels = list(report["rewards"]), report.get("labels", LABELS)
    axes_of = (
        ("samples N", lambda row: 1.0),
        ("seconds (decoding + scoring)", lambda row: row["seconds"] / row["samples"]),
        ("generated tokens per prompt", lambda row: row["tokens"] / row["samples"]),
    )
    with agg_figure(path, nrows=3, ncols=len(rewards), figsize=(5 * len(rewards), 10)) as axes:
        axes = [axes[i * len(rewards) : (i + 1) * len(rewards)] for i in range(3)]
        for row_axes, (xlabel, per_sample) in zip(axes, axes_of, strict=True):
            for ax, reward in zip(row_axes, rewards, strict=True):
                section = report["rewards"][reward]
                for method, curve in section["curves"].items():
                    if method == "greedy":
                        ax.axhline(curve[0], color="gray", ls=":", label="greedy")
                        continue
                    unit = per_sample(section["methods"][method])
                    ax.plot([unit * m for m in range(1, len(curve) + 1)], curve, label=labels.get(method, method))
                ax.set_xscale("log", base=2)
                ax.set_xlabel(xlabel)
                ax.set_ylabel("best reward")
                ax.set_title(reward)
                ax.legend(fontsize=6)


# -------------------------------------------------------------------------------------------------- main


def main(args: VsBonArguments) -> dict[str, Any]:
    """Computes the missing units (seeds outermost), then writes and prints the report. ``args`` is validated
    (`VsBonArguments.__post_init__`): bad reward and method names fail before any model loads."""
    total = args.sample_size * args.n_iterations
    variants = parse_variants(args.variants)
    bon_variants = parse_bon_variants(args.bon_variants, args.sample_size, total, taken=tuple(variants))
    # each method -> its method in the package's table (a variant's is aisp or bon_top_p) and its overrides
    kinds = {m: m for m in args.methods} | dict.fromkeys(variants, "aisp") | dict.fromkeys(bon_variants, "bon_top_p")
    specs = {m: variants.get(m) or bon_variants.get(m) or {} for m in kinds}
    methods = list(kinds)
    output_dir = Path(args.output_dir)
    store = UnitStore(output_dir, settings_of(args))
    if not args.report_only:
        torch.set_num_threads(args.threads)
        model, tokenizer = load_model_and_tokenizer(args.model_name_or_path, device="cpu")
        raw = load_prompts(args.prompt_source, max_prompts=args.num_prompts)
        prompts = [prompt_text(p) for p in raw]
        _, queries = tokenize_prompts(tokenizer, raw)
        embedder = SentenceEmbedder(device="cpu")
        rewards: dict[str, Any] = {}
        for seed in args.seeds:  # seeds outermost: an interrupted run still has complete seeds
            for reward_name in args.rewards:
                for method in methods:
                    kind = kinds[method]
                    done = store.path(reward_key(reward_name), method, "seed").parent.glob("seed*.json")
                    if kind == "greedy" and any(done):
                        continue  # deterministic: one run, whichever seed made it
                    identity = {"overrides": specs[method], "aisp_config": aisp_config_of(kind, specs[method], args)}

                    def compute(method=method, kind=kind, reward_name=reward_name, seed=seed) -> dict[str, Any]:
                        if reward_name not in rewards:
                            rewards[reward_name] = build_reward(reward_name, embedder=embedder)
                        return run_unit(method, kind, specs[method], reward_name, seed, model, tokenizer,
                                        rewards[reward_name], embedder, prompts, queries, args)  # fmt: skip

                    path = store.path(reward_key(reward_name), method, f"seed{seed}")
                    label = f"{reward_name} {method} seed {seed}"
                    # timed=False: a unit's seconds are its decoding (and scoring), not its metrics
                    store.get_or_compute(path, compute, label, identity, timed=False)
    units = store.units(
        "*/*/seed*.json",
        lambda u: (
            (u["seed"] in args.seeds or u["method"] == "greedy")  # the seeds asked for; greedy runs once
            and u["method"] in specs
            and u["overrides"] == specs[u["method"]]
            and u.get("aisp_config") == aisp_config_of(kinds[u["method"]], specs[u["method"]], args)
        ),
    )
    report = build_report(units, args, kinds) | {"labels": labels_of(args)}
    markdown = report_markdown(report, args)
    write_report_files(output_dir, report, markdown, plot=plot if report["rewards"] else None, plot_name="curves.png")
    print(markdown)
    return report


if __name__ == "__main__":
    from aisp_trl.cli import one_line_errors

    with one_line_errors("bench_vs_bon.py"):  # bad input: one line on stderr, exit 2 (AISP_TRL_DEBUG=1: traceback)
        main(parse_args())
