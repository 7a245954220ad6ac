"""RE-Control and the amortized AISP controller: training, safetensors, decoding equivalences, hooks and errors."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from _tiny import letter_reward, load_script, make_model, make_tokenizer

from aisp_trl import AISPConfig, GreedySampler, LengthSampler
from aisp_trl.controllers import (
    ControllerConfig,
    PrelogitController,
    REControlConfig,
    ValueMLP,
    controller_pairs,
    fit_controller,
    gradient_ascent,
    load_module,
    prelogits_along,
    save_module,
    train_value_model,
    value_loss,
)
from aisp_trl.decoding import HFDecoder
from aisp_trl.hooks import find_output_layer, transform_prelogits
from aisp_trl.pipeline import load_means, run_generation
from aisp_trl.samplers import AmortizedSampler, REControlSampler, collect_value_data

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "recipes" / "configs"
PROMPTS_FILE = ROOT / "tests" / "fixtures" / "prompts.jsonl"
WIDTH = 32
QUERIES = [[5, 6, 7, 8], [9, 10, 11], [12, 13, 14, 15, 16]]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def lm():
    return make_model("llama", hidden=WIDTH), make_tokenizer()


def _value_data(m: int = 24, t: int = 5, d: int = 8, seed: int = 0) -> dict[str, torch.Tensor]:
    """Trajectories whose reward is a linear function of their states, with ragged lengths."""
    g = torch.Generator().manual_seed(seed)
    states = torch.randn(m, t, d, generator=g)
    lengths = torch.randint(2, t + 1, (m,), generator=g)
    mask = (torch.arange(t)[None] < lengths[:, None]).float()
    states = states * mask[..., None]
    rewards = (states[..., 0] * mask).sum(1) / lengths
    return {"states": states, "mask": mask, "rewards": rewards}


# ------------------------------------------------------------------------------------------ training


@pytest.mark.parametrize("objective", ["bellman", "monte_carlo"])
def test_value_training_changes_parameters_and_lowers_the_loss(objective):
    data = _value_data()
    config = REControlConfig(hidden_size=16, epochs=30, batch_size=8, learning_rate=1e-2, objective=objective)
    value, record = train_value_model(data, config)
    # the initialisation train_value_model starts from (same seed): training moved every layer
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        initial = ValueMLP(8, 16, 3)
    for (name, before), after in zip(
        initial.layers.state_dict().items(), value.layers.state_dict().values(), strict=True
    ):
        assert not torch.equal(before, after), name
    assert record["losses"][-1] < 0.5 * record["losses"][0]
    assert not value.training


def test_value_loss_matches_the_authors_objective_by_hand():
    values = torch.tensor([[1.0, 2.0, 4.0], [3.0, 5.0, 0.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])
    rewards = torch.tensor([4.0, 6.0])
    # consecutive pairs: (1-2)^2 + (2-4)^2 + (3-5)^2 = 9; last steps: (4-4)^2 + (5-6)^2 = 1; over 2 trajectories
    assert value_loss(values, mask, rewards, "bellman").item() == pytest.approx(5.0)
    # every valid step against its reward: (9 + 4 + 0 + 9 + 1) / 5
    assert value_loss(values, mask, rewards, "monte_carlo").item() == pytest.approx(23 / 5)


def test_gradient_ascent_increases_the_value_and_zero_steps_are_the_identity():
    torch.manual_seed(0)
    value = ValueMLP(8, 16, 3)
    z = torch.randn(4, 8)
    moved = gradient_ascent(value, z, n_steps=5, step_size=0.05)
    with torch.no_grad():
        assert (value(moved) > value(z)).all()
    assert torch.equal(gradient_ascent(value, z, n_steps=0, step_size=1.0), z)
    assert not z.requires_grad and not moved.requires_grad


def test_controller_fit_changes_parameters_lowers_the_loss_and_explains_the_targets():
    g = torch.Generator().manual_seed(0)
    direction = torch.randn(8, 8, generator=g)
    pairs = []
    for _ in range(16):
        z = torch.randn(6, 8, generator=g)
        pairs.append((z, torch.tanh(z @ direction) * 0.5))
    controller, record = fit_controller(pairs, ControllerConfig(hidden_size=32, epochs=60, batch_size=16, seed=0))
    assert controller.output.weight.abs().sum() > 0  # started at zero
    assert record["train_losses"][-1] < 0.5 * record["train_losses"][0]
    assert record["val_r2"] > 0.3 and 1 <= record["best_epoch"] <= 60
    assert record["num_prompts"] == 16 and record["num_pairs"] == 96


# ------------------------------------------------------------------------------------------ safetensors


def test_modules_round_trip_through_safetensors(tmp_path):
    torch.manual_seed(0)
    value, controller = ValueMLP(8, 16, 3), PrelogitController(8, 12)
    value.norm.fit(torch.randn(10, 8))
    torch.nn.init.normal_(controller.output.weight)
    z = torch.randn(5, 8)
    for module, kind in ((value, "value"), (controller, "controller")):
        path = save_module(module, tmp_path / f"{kind}.safetensors", info={"training_seconds": 1.5})
        loaded, info = load_module(path, kind=kind)
        assert type(loaded) is type(module) and info == {"training_seconds": 1.5}
        assert torch.equal(loaded(z), module(z))
    with pytest.raises(ValueError, match="holds a 'value' module, not a 'controller'"):
        load_module(tmp_path / "value.safetensors", kind="controller")
    with pytest.raises(FileNotFoundError, match="recipes/re_control.py"):
        load_module(tmp_path / "missing.safetensors")


# ------------------------------------------------------------------------------------------ decoding


def _greedy_texts(model, tok, queries, horizon=8):
    sampler = GreedySampler(model, tok, letter_reward(), LengthSampler(horizon, horizon + 1), prompt_batch_size=2)
    return [[s.completion_ids for s in r.samples] for r in sampler.search(queries)]


def test_a_zero_controller_decodes_exactly_greedy(lm):
    model, tok = lm
    amortized = AmortizedSampler(model, tok, letter_reward(), LengthSampler(8, 9), PrelogitController(WIDTH, 16))
    got = [[s.completion_ids for s in r.samples] for r in amortized.search(QUERIES)]
    assert got == _greedy_texts(model, tok, QUERIES)
    assert not find_output_layer(model)._forward_pre_hooks


def test_a_trained_controller_changes_the_decode_and_scale_zero_restores_greedy(lm):
    model, tok = lm
    controller = PrelogitController(WIDTH, 16)
    torch.nn.init.normal_(controller.output.weight, std=2.0)
    moved = AmortizedSampler(model, tok, letter_reward(), LengthSampler(8, 9), controller)
    off = AmortizedSampler(model, tok, letter_reward(), LengthSampler(8, 9), controller, scale=0.0)
    greedy = _greedy_texts(model, tok, QUERIES)
    assert [[s.completion_ids for s in r.samples] for r in moved.search(QUERIES)] != greedy
    assert [[s.completion_ids for s in r.samples] for r in off.search(QUERIES)] == greedy


def test_re_control_with_zero_steps_equals_greedy(lm):
    model, tok = lm
    torch.manual_seed(0)
    zero = REControlSampler(model, tok, letter_reward(), LengthSampler(8, 9), ValueMLP(WIDTH, 16, 3), n_steps=0)
    assert [[s.completion_ids for s in r.samples] for r in zero.search(QUERIES)] == _greedy_texts(model, tok, QUERIES)
    assert not find_output_layer(model)._forward_pre_hooks


def test_re_control_hands_the_head_the_ascended_prelogit(lm):
    model, tok = lm
    torch.manual_seed(0)
    value = ValueMLP(WIDTH, 16, 3)
    head = find_output_layer(model)
    before, after = [], []
    # registered first: sees z_t before RE-Control's hook replaces it; the second hook (added after) sees z_t'
    h1 = head.register_forward_pre_hook(lambda module, args: before.append(args[0][:, -1].clone()))
    sampler = REControlSampler(model, tok, letter_reward(), LengthSampler(3, 4), value, n_steps=4, step_size=0.2)
    original = sampler._prelogit_transform()

    def recording(z, t):
        out = original(z, t)
        after.append(out.clone())
        return out

    sampler._prelogit_transform = lambda: recording
    try:
        sampler.generate(QUERIES[0])
    finally:
        h1.remove()
    # the shared prefill of the query (all but its last token) runs the head once before decoding, unhooked
    assert len(after) == 3 and len(before) == 4
    for z, z_new in zip(before[1:], after, strict=True):
        assert torch.allclose(z_new, gradient_ascent(value, z, 4, 0.2))
        with torch.no_grad():
            assert (value(z_new) > value(z)).all()


def test_the_transform_hook_is_removed_after_an_exception(lm):
    model, tok = lm
    head = find_output_layer(model)

    def fail(z, t):
        raise RuntimeError("boom")

    ids = torch.tensor([QUERIES[0]])
    with pytest.raises(RuntimeError, match="boom"), transform_prelogits(model, fail):
        model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=3, do_sample=False)
    assert not head._forward_pre_hooks
    bad_shape = transform_prelogits(model, lambda z, t: z[:, :2])
    with pytest.raises(ValueError, match="must return a tensor of the input's shape"), bad_shape:
        model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=3, do_sample=False)
    assert not head._forward_pre_hooks


def test_transform_on_a_plain_forward_changes_only_the_last_position(lm):
    model, _ = lm
    ids = torch.tensor([QUERIES[0], QUERIES[0]])
    with torch.no_grad():
        base = model(input_ids=ids).logits
        with transform_prelogits(model, lambda z, t: z + 1.0):
            moved = model(input_ids=ids).logits
        after = model(input_ids=ids).logits
    assert torch.equal(moved[:, :-1], base[:, :-1]) and not torch.allclose(moved[:, -1], base[:, -1])
    assert torch.equal(after, base)


# ------------------------------------------------------------------------------------------ data


def test_prelogits_along_matches_the_logits_of_a_forward(lm):
    model, _ = lm
    z = prelogits_along(model, QUERIES[0], [5, 6, 7])
    ids = torch.tensor([QUERIES[0] + [5, 6, 7]])
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0, 3:6]
    assert z.shape == (3, WIDTH)
    assert torch.allclose(find_output_layer(model)(z), logits, atol=1e-5)


def test_collect_value_data_shapes(lm):
    model, tok = lm
    config = REControlConfig(samples_per_prompt=3, max_new_tokens=5, seed=0)
    data = collect_value_data(model, tok, letter_reward(), QUERIES[:2], None, config)
    m = data["rewards"].shape[0]
    assert m == 6 and data["states"].shape == (6, 5, WIDTH) and data["mask"].shape == (6, 5)
    assert ((data["mask"].sum(1) >= 1) & (data["mask"].sum(1) <= 5)).all()
    assert torch.all(data["states"][data["mask"] == 0] == 0)


def test_pipeline_stores_means_that_reproduce_the_best_response(lm, tmp_path):
    model, tok = lm
    prompts = ["abc", "hello there", "good day"]
    config = AISPConfig(sample_size=3, n_iterations=2, prompt_batch_size=2, seed=0, lam=0.1)
    kwargs = dict(max_new_tokens=5, framing="none", show_progress=False)
    records = run_generation(model, tok, letter_reward(), prompts[:2], config, tmp_path, save_means=True, **kwargs)
    records = run_generation(model, tok, letter_reward(), prompts, config, tmp_path, save_means=True, **kwargs)
    means = load_means(tmp_path)
    assert sorted(means) == [0, 1, 2] and all(r["seconds"] > 0 for r in records)
    decoder = HFDecoder(model, tok.pad_token_id)
    gen = copy.deepcopy(model.generation_config)
    gen.update(do_sample=False, max_new_tokens=5)
    for record in records:
        stored = means[record["prompt_id"]]
        assert stored["mean"].shape == stored["best"].shape == (5, WIDTH)
        # decoding with the stored V of the best response gives that response back
        again = decoder.greedy([record["query_ids"]], [5], gen, stored["best"][None])[0]
        assert again == record["best"]["completion_ids"]
    pairs = controller_pairs(model, records, means, "best")
    assert [z.shape[0] for z, _ in pairs] == [len(r["best"]["completion_ids"]) for r in records]
    assert all(z.shape == u.shape for z, u in pairs)
    assert len(controller_pairs(model, records, means, "mean", tok.pad_token_id)) == 3
    # a run without means cannot be resumed with them, and best-of-N has no mean to store
    other = tmp_path / "plain"
    run_generation(model, tok, letter_reward(), prompts[:1], config, other, **kwargs)
    with pytest.raises(ValueError, match="without stored means"):
        run_generation(model, tok, letter_reward(), prompts, config, other, save_means=True, **kwargs)
    with pytest.raises(ValueError, match="has none"):
        run_generation(model, tok, letter_reward(), prompts, config, tmp_path / "bon", save_means=True,
                       method="bon_gaussian", **kwargs)  # fmt: skip


# ------------------------------------------------------------------------------------------ errors


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(n_steps=-1), "`n_steps` must be an integer >= 0, got -1"),
        (dict(step_size=-0.5), "`step_size` must be a finite number >= 0, got -0.5"),
        (dict(objective="td"), "`objective` must be one of"),
        (dict(top_p=0.0), "`top_p` must lie in"),
        (dict(num_layers=1), "`num_layers` must be an integer >= 2"),
        (dict(learning_rate=0), "`learning_rate` must be a finite number > 0"),
    ],
)
def test_re_control_config_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        REControlConfig(**kwargs)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(target="median"), "`target` must be one of"),
        (dict(validation_fraction=1.0), "`validation_fraction` must lie in"),
        (dict(hidden_size=0), "`hidden_size` must be an integer >= 1, got 0"),
    ],
)
def test_controller_config_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ControllerConfig(**kwargs)


def test_sampler_errors_name_the_argument(lm, tmp_path):
    model, tok = lm
    horizon = LengthSampler(4, 5)
    with pytest.raises(ValueError, match="width 8, but the model's LM head takes 32"):
        REControlSampler(model, tok, letter_reward(), horizon, ValueMLP(8))
    with pytest.raises(ValueError, match="width 8, but the model's LM head takes 32"):
        AmortizedSampler(model, tok, letter_reward(), horizon, PrelogitController(8))
    with pytest.raises(ValueError, match="`n_candidates` must be 1"):
        AmortizedSampler(model, tok, letter_reward(), horizon, PrelogitController(WIDTH), n_candidates=2)
    with pytest.raises(ValueError, match="`n_steps` must be an integer >= 0"):
        REControlSampler(model, tok, letter_reward(), horizon, ValueMLP(WIDTH), n_steps=1.5)
    with pytest.raises(TypeError, match="`value_model` must be a ValueMLP or the path"):
        REControlSampler(model, tok, letter_reward(), horizon, 3)
    with pytest.raises(FileNotFoundError, match="no safetensors file"):
        AmortizedSampler(model, tok, letter_reward(), horizon, tmp_path / "none.safetensors")


# ------------------------------------------------------------------------------------------ recipes


def _recipe(name: str):
    return load_script("recipes", name)


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    from scripts.tiny_checkpoints import save_tiny_lm, save_tiny_reward_model

    root = tmp_path_factory.mktemp("checkpoints")
    return save_tiny_lm(root / "lm"), save_tiny_reward_model(root / "rm")


def test_recipes_train_both_modules_and_compare_runs_them(checkpoints, tmp_path):
    lm_dir, rm_dir = checkpoints
    common = ["--model_name_or_path", str(lm_dir), "--reward", str(rm_dir), "--prompt_source", str(PROMPTS_FILE)]
    re_control = _recipe("re_control")
    args = re_control.make_parser().parse_args_and_config(
        args=["--config", str(CONFIGS / "tiny_re_control.yaml"), "--output_dir", str(tmp_path / "rc"), *common]
    )
    report = re_control.main(*args)
    assert report["num_trajectories"] == 6 and report["training_seconds"] > 0
    value, info = load_module(tmp_path / "rc" / "value_model.safetensors", kind="value")
    assert info["num_prompts"] == 3 and value.input_dim == WIDTH

    amortize = _recipe("amortize_aisp")
    argv = ["--config", str(CONFIGS / "tiny_amortize.yaml"), "--output_dir", str(tmp_path / "am"), *common]
    report = amortize.main(*amortize.make_parser().parse_args_and_config(args=argv))
    assert report["num_prompts"] == 4 and report["aisp_seconds"] > 0
    assert report["training_seconds"] >= report["aisp_seconds"]
    assert sorted(load_means(tmp_path / "am" / "aisp")) == [0, 1, 2, 3]
    controller, info = load_module(tmp_path / "am" / "controller.safetensors", kind="controller")
    assert info["best_epoch"] >= 1 and controller.input_dim == WIDTH

    compare = _recipe("compare")
    argv = [
        "--config", str(CONFIGS / "compare_tiny.yaml"), *common, "--output_dir", str(tmp_path / "cmp"),
        "--methods", "greedy", "re_control", "amortized", "aisp",
        "--value_model_path", str(tmp_path / "rc" / "value_model.safetensors"), "--re_control_n_steps", "2",
        "--controller_path", str(tmp_path / "am" / "controller.safetensors"), "--plot", "false",
    ]  # fmt: skip
    report = compare.main(*compare.make_parser().parse_args_and_config(args=argv))
    methods = report["methods"]
    assert list(methods) == ["greedy", "re_control", "amortized", "aisp"]
    assert methods["re_control"]["summary"]["training_seconds"] == pytest.approx(
        load_module(tmp_path / "rc" / "value_model.safetensors")[1]["training_seconds"]
    )
    assert methods["greedy"]["summary"]["training_seconds"] is None
    for entry in methods.values():
        low, high = entry["summary"]["reward_ci95"]
        assert low <= entry["summary"]["reward_mean"] <= high and entry["summary"]["seconds_per_prompt"] > 0
    markdown = (tmp_path / "cmp" / "results.md").read_text()
    assert "| RE-Control |" in markdown and "| amortized AISP |" in markdown and "training s" in markdown


def test_compare_arguments_need_the_trained_modules():
    from aisp_trl.pipeline.compare import CompareArguments

    with pytest.raises(ValueError, match="`value_model_path` is not set; train one with recipes/re_control.py"):
        CompareArguments(methods=["re_control"])
    with pytest.raises(ValueError, match="`controller_path` is not set"):
        CompareArguments(methods=["amortized"])
    with pytest.raises(ValueError, match="`re_control_n_steps` must be an integer >= 0"):
        CompareArguments(re_control_n_steps=-2)


def test_smollm2_presets_parse(tmp_path):
    out = ["--output_dir", str(tmp_path)]
    rc_args, rc_config = (
        _recipe("re_control")
        .make_parser()
        .parse_args_and_config(args=["--config", str(CONFIGS / "re_control_smollm2.yaml"), *out])
    )
    assert rc_args.prompt_source == "general:train" and rc_args.max_prompts == 64
    assert (rc_config.samples_per_prompt, rc_config.objective, rc_config.num_layers) == (8, "bellman", 3)
    script, generation, controller = (
        _recipe("amortize_aisp")
        .make_parser()
        .parse_args_and_config(args=["--config", str(CONFIGS / "amortize_smollm2.yaml"), *out])
    )
    assert generation.prompt_source == "general:train" and generation.max_prompts == 64
    assert generation.aisp_config().total_samples == 32 and controller.target == "best"
    compare_args, aisp = (
        _recipe("compare")
        .make_parser()
        .parse_args_and_config(args=["--config", str(CONFIGS / "compare_controllers_smollm2.yaml"), *out])
    )
    assert compare_args.prompt_source == "general:bench" and compare_args.max_prompts == 24
    assert {"re_control", "amortized"} <= set(compare_args.methods) and aisp.total_samples == 32
