"""The vLLM processor's math and bookkeeping without vLLM: `LogitShift` on hand-built tensors, the noise recipe, and
the errors a user without vLLM (or with an unsuitable engine) sees."""

import pytest
import torch
import torch.nn.functional as F
from _tiny import make_model, make_tokenizer
from transformers import AutoConfig, LlamaConfig

from aisp_trl import AISPSampler, LengthSampler
from aisp_trl.decoding import NoiseDraw, PrelogitNoise
from aisp_trl.decoding.logit_shift import (
    EXTRA_KEY,
    LogitShift,
    check_logit_shift,
    decode_draw,
    encode_draw,
    encode_steps,
    load_output_weight,
    logit_scale,
)
from aisp_trl.decoding.vllm import VLLMDecoder, check_engine, is_vllm_engine
from aisp_trl.proposals import make_proposal

D, VOCAB = 4, 7


def _draw(seed: int, n: int = 3, horizon: int = 5, mean: torch.Tensor | None = None, proposal: str = "iid"):
    generator = torch.Generator().manual_seed(seed)
    mean = torch.zeros(horizon if proposal != "steering" else 1, D) if mean is None else mean
    return NoiseDraw(generator.get_state(), mean, 0.5, n, horizon, make_proposal(proposal, 0.9))


def _shift(weight: torch.Tensor, scale: float = 1.0) -> LogitShift:
    return LogitShift(lambda: weight, scale, torch.device("cpu"), torch.float32)


@pytest.mark.parametrize("proposal", ["iid", "steering", "ar1"])
def test_noise_draw_repeats_the_samplers_draw(proposal):
    # the recipe redraws exactly what proposal.draw gave from the same generator: what makes both backends agree
    generator = torch.Generator().manual_seed(3)
    state = generator.get_state()
    shape = (1, D) if proposal == "steering" else (5, D)
    mean = torch.randn(shape, generator=torch.Generator().manual_seed(9))
    expected = make_proposal(proposal, 0.9).draw(mean, 0.5, 3, generator)
    draw = NoiseDraw(state, mean, 0.5, 3, 5, make_proposal(proposal, 0.9))
    assert torch.equal(draw.draw(), expected)
    assert draw.steps().shape == (3, 5, D)
    assert torch.equal(decode_draw(encode_draw(draw, 0)["draw"]).steps(), draw.steps())  # through msgpack types
    assert draw.key() == decode_draw(encode_draw(draw, 2)["draw"]).key() != _draw(4).key()


def test_prelogit_noise_dense_lays_prompts_on_their_rows():
    a, b = _draw(0, n=2, horizon=5), _draw(1, n=3, horizon=3)
    dense = PrelogitNoise([a, b], D).dense()
    assert dense.shape == (5, 5, D)
    assert torch.equal(dense[:2], a.steps()) and torch.equal(dense[2:, :3], b.steps())
    assert not dense[2:, 3:].any()  # past a row's horizon: no perturbation
    assert PrelogitNoise([a, b], D).row_sources() == [(0, 0), (0, 1), (1, 0), (1, 1), (1, 2)]


def test_zero_mean_is_not_sent():
    assert encode_draw(_draw(0), 0)["draw"]["mean"] is None
    moved = _draw(0, mean=torch.ones(5, D))
    assert encode_draw(moved, 1)["draw"]["mean"] is not None
    assert torch.equal(decode_draw(encode_draw(moved, 1)["draw"]).mean, moved.mean)


def test_shift_adds_scaled_w_v_t_at_each_rows_own_step():
    weight = torch.randn(VOCAB, D, generator=torch.Generator().manual_seed(0))
    shift = _shift(weight, scale=0.5)
    draw = _draw(1, n=2, horizon=3)
    steps = draw.steps()
    out_a, out_b, out_c = [], [11], []  # live output-token lists: row 1 is one step further
    shift.update([], [(0, {EXTRA_KEY: encode_draw(draw, 0)}, out_a), (1, {EXTRA_KEY: encode_draw(draw, 1)}, out_b)], [])
    shift.update([], [(2, None, out_c)], [])  # a request without AISP settings: untouched
    logits = torch.randn(3, VOCAB, generator=torch.Generator().manual_seed(1))
    result = shift.apply(logits.clone())
    assert torch.allclose(result[0], logits[0] + 0.5 * weight @ steps[0, 0])
    assert torch.allclose(result[1], logits[1] + 0.5 * weight @ steps[1, 1])
    assert torch.equal(result[2], logits[2])
    assert len(shift.noise) == 1  # one draw per prompt and iteration, however many rows share it
    out_a += [5, 6, 7]  # row 0 reached its horizon: no perturbation past it
    assert torch.equal(shift.apply(logits.clone())[0], logits[0])


def test_shift_follows_moves_swaps_and_removals():
    weight = torch.randn(VOCAB, D, generator=torch.Generator().manual_seed(0))
    shift = _shift(weight)
    own = torch.randn(4, D, generator=torch.Generator().manual_seed(2))
    draw = _draw(5, n=2)
    shift.update([], [(0, {EXTRA_KEY: encode_steps(own)}, []), (1, {EXTRA_KEY: encode_draw(draw, 1)}, [])], [])
    shift.update([], [], [(0, 1, True)])  # swap
    logits = torch.zeros(2, VOCAB)
    swapped = shift.apply(logits.clone())
    assert torch.allclose(swapped[1], weight @ own[0]) and torch.allclose(swapped[0], weight @ draw.steps()[1, 0])
    shift.update([], [], [(1, 0, False)])  # one-way 1 -> 0: the draw's row there is replaced and released
    assert list(shift.rows) == [0] and len(shift.noise) == 1
    assert torch.allclose(shift.apply(torch.zeros(1, VOCAB))[0], weight @ own[0])
    shift.update([0], [], [])
    assert not shift.rows and not shift.noise and not shift.users  # nothing leaks


def test_shift_equals_the_prelogit_perturbation_on_a_linear_head():
    # logits = s * (W z + b): adding v to z equals adding s * W v to the logits
    head = torch.nn.Linear(D, VOCAB)
    z, v = torch.randn(2, D), torch.randn(2, D)
    shift = _shift(head.weight.detach(), scale=2.0)
    shift.update([], [(i, {EXTRA_KEY: encode_steps(v[i : i + 1])}, []) for i in range(2)], [])
    with torch.no_grad():
        assert torch.allclose(shift.apply(2.0 * head(z)), 2.0 * head(z + v), atol=1e-5)


def test_logit_scale_reads_the_config_and_refuses_soft_capping():
    assert logit_scale(LlamaConfig()) == 1.0
    assert logit_scale(AutoConfig.for_model("cohere", logit_scale=0.25)) == 0.25
    assert logit_scale(AutoConfig.for_model("granite", logits_scaling=4.0)) == 0.25
    with pytest.raises(ValueError, match=r"final_logit_softcapping=30\.0.*HF backend"):
        logit_scale(AutoConfig.for_model("gemma2", final_logit_softcapping=30.0))


def test_check_logit_shift_measures_the_heads_factor():
    # what load_llm compares: the engine's logits with v added at the input of its output layer, minus without
    generator = torch.Generator().manual_seed(0)
    weight, hidden, v = (torch.randn(*shape, generator=generator) for shape in ((50, 8), (3, 8), (3, 8)))

    def delta(head):  # head: pre-logit (rows, d) -> logits (rows, vocab)
        return head(hidden + v) - head(hidden)

    # plain head, bf16 rounding, a vocabulary vLLM padded to 64 (compared on the checkpoint's 50 tokens)
    bf16 = delta(lambda z: F.pad((0.5 * z @ weight.T).bfloat16().float(), (0, 14)))
    assert check_logit_shift(bf16, v, weight, 0.5, "m") == pytest.approx(0.5, rel=1e-2)
    with pytest.raises(
        ValueError, match=r"`m`: its head multiplies the logits by 1\.5, but aisp_trl reads 0\.5 .*0\.333x"
    ):
        check_logit_shift(delta(lambda z: 1.5 * z @ weight.T), v, weight, 0.5, "`m`")
    with pytest.raises(ValueError, match=r"not move by a multiple of W v.*HF backend.*verify_logit_shift=False"):
        check_logit_shift(delta(lambda z: 2.0 * torch.tanh(z @ weight.T / 2.0)), v, weight, 1.0, "m")  # soft cap
    with pytest.raises(ValueError, match=r"not move by a multiple of W v"):
        check_logit_shift(delta(lambda z: z @ weight.T), v, weight.flip(0), 1.0, "m")  # W read under a wrong name


@pytest.mark.parametrize("arch", ["gpt2", "qwen2"])
def test_output_weight_is_read_from_the_checkpoint(tmp_path, arch):
    model = make_model(arch)  # GPT-2 ties the output layer to the input embeddings; the tiny Qwen2 does not
    head, embeddings = model.get_output_embeddings().weight, model.get_input_embeddings().weight
    assert (head is embeddings) == (arch == "gpt2")
    model.save_pretrained(tmp_path)
    weight = load_output_weight(str(tmp_path), AutoConfig.from_pretrained(tmp_path))
    assert torch.equal(weight, head.detach())


def test_errors_without_vllm_or_with_an_unsuitable_engine():
    class LLM:  # a stand-in for vllm.LLM built without the processor
        class model_config:  # noqa: N801
            logits_processors = None
            hf_config = LlamaConfig()

    LLM.__module__ = "vllm.entrypoints.llm"
    assert is_vllm_engine(LLM()) and not is_vllm_engine(make_model("llama"))
    with pytest.raises(ValueError, match=r"without aisp_trl's logits processor.*load_llm"):
        check_engine(LLM())
    try:
        import vllm  # noqa: F401
    except ImportError:
        with pytest.raises(ImportError, match=r"setup\.sh --vllm"):
            VLLMDecoder(LLM())
        with pytest.raises(ImportError, match=r"setup\.sh --vllm"):
            AISPSampler(LLM(), make_tokenizer(), lambda texts: [0.0] * len(texts), LengthSampler(2, 3))
    else:
        with pytest.raises(ValueError, match="without aisp_trl's logits processor"):
            AISPSampler(LLM(), make_tokenizer(), lambda texts: [0.0] * len(texts), LengthSampler(2, 3))


# -- data parallelism: one engine per process ----------------------------------------------------------------------
def test_data_parallel_placement_splits_gpus_and_cores():
    from aisp_trl.vllm import data_parallel_placement

    gpus = ["4", "5", "6", "7"]  # CUDA_VISIBLE_DEVICES=4,5,6,7: ids are passed through, not renumbered
    assert [data_parallel_placement(i, 4, gpus=gpus) for i in range(4)] == [{"CUDA_VISIBLE_DEVICES": g} for g in gpus]
    assert data_parallel_placement(1, 2, 2, gpus=gpus) == {"CUDA_VISIBLE_DEVICES": "6,7"}  # 2 engines x TP 2
    cpus = list(range(8))
    assert data_parallel_placement(0, 2, cpus=cpus) == {"VLLM_CPU_OMP_THREADS_BIND": "0,1,2,3"}
    assert data_parallel_placement(1, 2, cpus=cpus) == {"VLLM_CPU_OMP_THREADS_BIND": "4,5,6,7"}
    assert data_parallel_placement(1, 2, 2, cpus=cpus) == {"VLLM_CPU_OMP_THREADS_BIND": "4,5|6,7"}  # TP ranks
    assert data_parallel_placement(2, 3, cpus=[0, 1, 2, 3, 4]) == {"VLLM_CPU_OMP_THREADS_BIND": "2"}  # 1 core each
    with pytest.raises(ValueError, match=r"need 4 GPUs on this machine, but 2 are visible \(0,1\)"):
        data_parallel_placement(0, 2, 2, gpus=["0", "1"])
    with pytest.raises(ValueError, match=r"need 3 CPU cores.*has 2"):
        data_parallel_placement(0, 3, cpus=[0, 1])
    with pytest.raises(ValueError, match=r"`local_process_index` must be < `num_local_processes` \(2\), got 2"):
        data_parallel_placement(2, 2, cpus=cpus)
    with pytest.raises(ValueError, match="`tensor_parallel_size` must be an integer >= 1, got 0"):
        data_parallel_placement(0, 1, 0, cpus=cpus)


def test_engine_environment_restores_what_was_there(monkeypatch):
    import os

    from aisp_trl.vllm import engine_environment

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    monkeypatch.delenv("VLLM_CPU_OMP_THREADS_BIND", raising=False)
    with pytest.raises(RuntimeError, match="engine failed"):
        with engine_environment({"CUDA_VISIBLE_DEVICES": "1", "VLLM_CPU_OMP_THREADS_BIND": "1"}):
            assert os.environ["CUDA_VISIBLE_DEVICES"] == "1" and os.environ["VLLM_CPU_OMP_THREADS_BIND"] == "1"
            raise RuntimeError("engine failed")  # restored also when the engine fails to start
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "0,1" and "VLLM_CPU_OMP_THREADS_BIND" not in os.environ


def test_each_process_starts_its_engine_on_its_own_cores(monkeypatch):
    # the pipeline's use_vllm path under a 2-process launch on a CPU machine, with load_llm stood in for
    import os
    from types import SimpleNamespace

    import aisp_trl.vllm
    from aisp_trl.pipeline import AISPGenerationArguments, load_vllm_engine

    seen = []
    monkeypatch.setattr(aisp_trl.vllm, "visible_gpus", lambda: [])
    monkeypatch.setattr(aisp_trl.vllm, "load_llm", lambda name, **kw: seen.append((name, kw, dict(os.environ))))
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    monkeypatch.delenv("VLLM_CPU_OMP_THREADS_BIND", raising=False)
    args = AISPGenerationArguments(vllm_tensor_parallel_size=1)
    for rank in (0, 1):
        load_vllm_engine(args, "m", None, SimpleNamespace(num_processes=2, local_process_index=rank))
    assert [s[2]["VLLM_CPU_OMP_THREADS_BIND"] for s in seen] == ["0", "1"]
    assert [s[1]["gpu_memory_utilization"] for s in seen] == [0.125, 0.125]  # the CPU share split in two
    assert "VLLM_CPU_OMP_THREADS_BIND" not in os.environ  # back to what it was
    monkeypatch.setenv("VLLM_CPU_OMP_THREADS_BIND", "0-1")  # the user's binding is kept
    load_vllm_engine(args, "m", None, SimpleNamespace(num_processes=2, local_process_index=1))
    assert seen[-1][2]["VLLM_CPU_OMP_THREADS_BIND"] == "0-1"
