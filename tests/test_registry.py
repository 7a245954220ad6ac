"""`aisp_trl.samplers.registry.METHODS`: the one method table the pipeline, compare, the benchmarks and the server
build their samplers from."""

from __future__ import annotations

import pytest
from _tiny import letter_reward, make_model, make_tokenizer

from aisp_trl import AISPConfig, AISPSampler, BestOfNSampler, GaussianBestOfNSampler, GreedySampler, LengthSampler
from aisp_trl.pipeline.compare import CompareArguments, method_options
from aisp_trl.samplers.registry import METHODS, MethodOptions, build_sampler, method_label


@pytest.fixture(scope="module")
def model_and_tok():
    return make_model("llama"), make_tokenizer()


def test_the_table_names_every_method_once_with_its_label():
    assert list(METHODS) == [
        "aisp", "bon_top_p", "bon_gaussian", "bon_aisp_proposal", "args", "greedy", "re_control", "amortized"
    ]  # fmt: skip
    assert method_label("bon_gaussian") == "BoN (N)" and method_label("my_variant") == "my_variant"
    assert {m for m, spec in METHODS.items() if spec.needs_module} == {"re_control", "amortized"}


def test_bon_n_has_one_definition_whatever_aisp_uses(model_and_tok):
    # BoN (N) is the paper's baseline: i.i.d. pre-logit noise at sigma2 = 0.5, not AISP's proposal or sigma2
    model, tok = model_and_tok
    aisp_config = AISPConfig(sample_size=2, n_iterations=3, sigma2=0.25, proposal="ar1", seed=0)
    for options in (MethodOptions(), method_options(CompareArguments())):
        bon = build_sampler("bon_gaussian", model, tok, letter_reward(), 4, aisp_config, options)
        assert isinstance(bon, GaussianBestOfNSampler)
        assert bon.config.sigma2 == 0.5 and bon.proposal.name == "iid" and bon.config.sample_size == 6


def test_every_training_free_method_builds_at_the_budget(model_and_tok):
    model, tok = model_and_tok
    config = AISPConfig(sample_size=2, n_iterations=2, seed=0)
    built = {m: build_sampler(m, model, tok, letter_reward(), 4, config) for m in ("aisp", "bon_top_p", "greedy")}
    assert isinstance(built["aisp"], AISPSampler) and built["aisp"].config.n_iterations == 2
    assert isinstance(built["bon_top_p"], BestOfNSampler) and built["bon_top_p"].sample_size == 4
    assert built["bon_top_p"].gen_config.top_p == 0.9 and built["bon_top_p"].gen_config.do_sample
    assert isinstance(built["greedy"], GreedySampler)
    with pytest.raises(ValueError, match="`method` must be one of"):
        build_sampler("nope", model, tok, letter_reward(), 4, config)


def test_the_control_is_aisp_first_iteration_at_the_whole_budget(model_and_tok):
    # "BoN over AISP's proposal": N draws from the same proposal, sigma2 and rho as AISP, around U = 0
    model, tok = model_and_tok
    config = AISPConfig(sample_size=2, n_iterations=3, sigma2=0.25, proposal="ar1", rho=0.8, seed=0)
    control = build_sampler("bon_aisp_proposal", model, tok, letter_reward(), 4, config)
    assert isinstance(control, AISPSampler) and control.config.n_iterations == 1
    assert control.config.sample_size == 6 and control.proposal.spec() == {"name": "ar1", "rho": 0.8}
    assert control.config.sigma2 == 0.25
    query = tok("the cat").input_ids
    first = AISPSampler(model, tok, letter_reward(), LengthSampler(4, 5), sample_size=6,
                        n_iterations=1, sigma2=0.25, proposal="ar1", rho=0.8, seed=0)  # fmt: skip
    assert [s.completion_ids for s in control.search(query)[0].samples] == [
        s.completion_ids for s in first.search(query)[0].samples
    ]
