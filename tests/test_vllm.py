"""The vLLM backend on the embedded SmolLM2-135M-Instruct: same samples as the HF backend for a seed, zero noise is
plain greedy, batch independence, BoN (top-p) on vLLM's sampler, clear errors.

Needs vLLM (``bash scripts/setup.sh --vllm``; CI runs this file in ``.venv-vllm``) and the embedded model. One engine
serves the module; the HF reference runs first, in its own process (see ``tests/scripts/vllm_vs_hf.py``).
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from _tiny import make_model
from transformers import GenerationConfig

from aisp_trl import AISPSampler, BestOfNSampler, LengthSampler
from aisp_trl.decoding import NoiseDraw, PrelogitNoise
from aisp_trl.samplers import ARGSSampler

HAS_VLLM = importlib.util.find_spec("vllm") is not None
pytestmark = [
    pytest.mark.vllm,
    pytest.mark.skipif(
        not HAS_VLLM, reason="vLLM is not installed here: `bash scripts/setup.sh --vllm` (CI runs these in .venv-vllm)"
    ),
]

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "tests" / "scripts" / "vllm_vs_hf.py"


def _scenario():
    spec = importlib.util.spec_from_file_location("vllm_vs_hf", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def hf_reference(tmp_path_factory, smollm2):
    """The HF backend's samples, computed in a separate process before the engine starts."""
    del smollm2  # only for its skip / CI-failure when the embedded model is missing
    out = tmp_path_factory.mktemp("hf") / "hf.json"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "hf", str(out)], env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(out.read_text())


@pytest.fixture(scope="module")
def engine(hf_reference):
    from aisp_trl.vllm import load_llm, load_tokenizer

    llm = load_llm(max_model_len=512)
    yield llm, load_tokenizer()
    del llm


def _teleflm_folder(folder: Path, output_mult: float, mup_scale_factor: float) -> Path:
    """A tiny Llama checkpoint that vLLM loads as TeleFLM: with ``use_mup`` its head multiplies the logits by
    ``output_mult / mup_scale_factor``, a factor under config keys aisp_trl's `logit_scale` does not read."""
    from _tiny import EOS_ID, PAD_ID, VOCAB, make_tokenizer
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        hidden_size=128, intermediate_size=256, num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1,
        max_position_embeddings=128, vocab_size=len(VOCAB), bos_token_id=EOS_ID, eos_token_id=EOS_ID,
        pad_token_id=PAD_ID, tie_word_embeddings=False,
    )  # fmt: skip
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(folder)
    make_tokenizer().save_pretrained(folder)
    saved = json.loads((folder / "config.json").read_text())
    saved |= {"architectures": ["TeleFLMForCausalLM"], "use_mup": True, "output_mult": output_mult,
              "mup_scale_factor": mup_scale_factor}  # fmt: skip
    (folder / "config.json").write_text(json.dumps(saved))
    return folder


def test_load_llm_refuses_a_head_whose_logit_factor_it_does_not_read(tmp_path):
    # vLLM's TeleFLM multiplies the logits by output_mult / mup_scale_factor = 3; the processor would add 1 * W v
    # where the engine's own head gives 3 * W v: samples silently off. load_llm measures the engine's shift and says so
    from aisp_trl.vllm import load_llm

    folder = _teleflm_folder(tmp_path / "teleflm", output_mult=6.0, mup_scale_factor=2.0)
    with pytest.raises(
        ValueError, match=r"TeleFLMForCausalLM.*multiplies the logits by 3, but aisp_trl reads 1 from its config"
    ) as error:
        load_llm(folder, max_model_len=64)
    assert str(folder) in str(error.value) and "verify_logit_shift=False" in str(error.value)


def test_same_samples_as_hf_for_the_same_seed(engine, hf_reference):
    llm, tok = engine
    scenario = _scenario()
    ours = scenario.run(llm, tok)
    # the reference covers what it should: EOS inside the horizon, two prompt lengths, two horizons, 2 iterations
    eos = tok.eos_token_id
    assert any(ids[-1] == eos and len(ids) < scenario.HORIZONS[0] for ids in hf_reference["aisp"][0])
    assert [len(s) for s in hf_reference["aisp"]] == [8, 8]
    assert ours["greedy"] == hf_reference["greedy"]
    pairs = [
        (a, b)
        for q_ours, q_ref in zip(ours["aisp"], hf_reference["aisp"], strict=True)
        for a, b in zip(q_ours, q_ref, strict=True)
    ]
    same = sum(a == b for a, b in pairs)
    seconds = f"HF {hf_reference['seconds']}, vLLM {ours['seconds']}"
    print(f"identical AISP samples HF vs vLLM: {same}/{len(pairs)}; seconds {seconds}")
    assert same >= 0.9 * len(pairs), [(a, b) for a, b in pairs if a != b]


def _draws(tok, sigma2: float, seed: int = 0) -> tuple[list[list[int]], PrelogitNoise]:
    scenario = _scenario()
    queries = scenario.queries(tok)
    draws = [
        NoiseDraw(torch.Generator().manual_seed(seed + j).get_state(), torch.zeros(16, 576), sigma2, 2, 16)
        for j in range(len(queries))
    ]
    return [q for q in queries for _ in range(2)], PrelogitNoise(draws, 576)


def test_load_llm_measured_the_plain_heads_factor(engine):
    # SmolLM2 (Llama, tied embeddings, no logit factor): the engine's logits move by exactly 1 * W v
    from aisp_trl.vllm import verify_logit_shift

    llm, _ = engine
    assert llm.model_config.hf_config.architectures == ["LlamaForCausalLM"]
    assert verify_logit_shift(llm, seed=1) == pytest.approx(1.0, abs=1e-4)


def test_zero_noise_is_vllm_greedy_and_noise_changes_it(engine):
    from aisp_trl.decoding.vllm import VLLMDecoder

    llm, tok = engine
    decoder = VLLMDecoder(llm)
    config = GenerationConfig(do_sample=False, max_new_tokens=16, eos_token_id=tok.eos_token_id)
    rows, zero = _draws(tok, sigma2=0.0)
    plain = decoder.greedy(rows, [16] * len(rows), config)
    assert decoder.greedy(rows, [16] * len(rows), config, zero) == plain
    _, noisy = _draws(tok, sigma2=1.0)
    perturbed = decoder.greedy(rows, [16] * len(rows), config, noisy)
    assert perturbed != plain  # the processor acts
    # the same noise sent as a dense per-row tensor (the other request form) gives the same tokens
    assert decoder.greedy(rows, [16] * len(rows), config, noisy.dense()) == perturbed


def test_the_base_nll_comes_with_the_decode_on_vllm_too(engine, smollm2):
    # kl_coef on vLLM: the engine's raw log-probabilities of the decoded tokens are taken before any logits
    # processor (AISP's shift) and before temperature / top-p, so they are the base model's; they must match the HF
    # model's teacher-forced NLL of the same completions
    from aisp_trl.decoding import HFDecoder
    from aisp_trl.decoding.vllm import VLLMDecoder

    llm, tok = engine
    model, _ = smollm2
    decoder, reference = VLLMDecoder(llm), HFDecoder(model, tok.pad_token_id)
    config = GenerationConfig(do_sample=False, max_new_tokens=16, eos_token_id=tok.eos_token_id)
    rows, noisy = _draws(tok, sigma2=1.0)
    greedy, nll = decoder.greedy_with_nll(rows, [16] * len(rows), config, noisy)
    assert greedy == decoder.greedy(rows, [16] * len(rows), config, noisy)
    assert nll == pytest.approx(reference.response_nll(rows, greedy), rel=2e-3, abs=2e-3)
    sampling = GenerationConfig(do_sample=True, top_p=0.9, temperature=1.3, max_new_tokens=16,
                                eos_token_id=tok.eos_token_id)  # fmt: skip
    sampled, nll = decoder.sample_with_nll(rows, [16] * len(rows), sampling, seed=0)
    assert sampled == decoder.sample(rows, [16] * len(rows), sampling, seed=0)
    assert nll == pytest.approx(reference.response_nll(rows, sampled), rel=2e-3, abs=2e-3)
    # and the samplers take kl_coef on vLLM: each sample carries KL and score
    sampler = BestOfNSampler(llm, tok, _scenario().letter_reward, LengthSampler(8, 9), 4, 0, kl_coef=0.1)
    samples = sampler.search(rows[0])[0].samples
    assert all(s.kl is not None and s.score == pytest.approx(s.reward - 0.1 * s.kl) for s in samples)


def test_a_querys_samples_do_not_depend_on_the_batch(engine):
    llm, tok = engine
    scenario = _scenario()
    queries = scenario.queries(tok)

    def aisp(batch):
        sampler = AISPSampler(llm, tok, scenario.letter_reward, LengthSampler(12, 13), sample_size=4,
                              n_iterations=2, seed=0, prompt_batch_size=2)  # fmt: skip
        return [[s.completion_ids for s in r.samples] for r in sampler.search(batch)]

    together = aisp(queries)
    assert [aisp([q])[0] for q in queries] == together


def test_best_of_n_top_p_samples_reproducibly_per_seed(engine):
    llm, tok = engine
    scenario = _scenario()
    query = scenario.queries(tok)[1]

    def bon(seed):
        sampler = BestOfNSampler(llm, tok, scenario.letter_reward, LengthSampler(16, 17), 4, seed)
        return [s.completion_ids for s in sampler.search(query)[0].samples]

    first = bon(0)
    assert len(first) == 4 and len({tuple(s) for s in first}) == 4  # N distinct samples
    assert bon(0) == first and bon(1) != first


def test_clear_errors(engine, tmp_path):
    from aisp_trl.vllm import load_llm

    llm, tok = engine
    with pytest.raises(TypeError, match="ARGS-greedy.*HF backend"):
        ARGSSampler(llm, tok, _scenario().letter_reward, LengthSampler(4, 5))
    with pytest.raises(ValueError, match="model keyword arguments"):
        sampler = AISPSampler(llm, tok, _scenario().letter_reward, LengthSampler(4, 5), seed=0, n_iterations=1)
        sampler.search(_scenario().queries(tok)[0], position_ids=None)
    with pytest.raises(ValueError, match="no_repeat_ngram_size=2.*vLLM backend"):
        sampler = AISPSampler(llm, tok, _scenario().letter_reward, LengthSampler(4, 5), n_iterations=1,
                              generation_config=GenerationConfig(no_repeat_ngram_size=2))  # fmt: skip
        sampler.search(_scenario().queries(tok)[0])
    gemma = make_model("gemma2")  # soft-caps its logits: refused before any engine starts
    assert gemma.config.final_logit_softcapping is not None
    gemma.save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="soft-caps its logits"):
        load_llm(tmp_path)


def test_pipeline_generation_on_vllm_resumes(engine, tmp_path):
    # run_generation with the engine (use_vllm's path): records for every prompt; a run cut short resumes from its
    # shard and ends with the same records (the same seed gives the same samples)
    from aisp_trl.config import AISPConfig
    from aisp_trl.pipeline import SHARD_DIR, default_state, run_generation
    from aisp_trl.rewards import as_reward_function

    llm, tok = engine
    prompts = ["Say hi.", "Name a colour.", "Write one word about the sea."]
    config = AISPConfig(sample_size=2, n_iterations=1, seed=0, prompt_batch_size=1)

    def generate(out):
        reward = as_reward_function(_scenario().letter_reward)
        return run_generation(llm, tok, reward, prompts, config, out, default_state(),
                              max_new_tokens=8, show_progress=False)  # fmt: skip

    full = generate(tmp_path / "full")
    assert [r["prompt_id"] for r in full] == [0, 1, 2] and all(len(r["samples"]) == 2 for r in full)
    shard = next((tmp_path / "full" / SHARD_DIR).iterdir())
    cut = tmp_path / "cut" / SHARD_DIR
    cut.mkdir(parents=True)
    (cut / shard.name).write_text(shard.read_text().splitlines(keepends=True)[0])  # killed after one prompt
    (tmp_path / "cut" / "aisp_run.json").write_text((tmp_path / "full" / "aisp_run.json").read_text())
    resumed = generate(tmp_path / "cut")
    assert [r["samples"] for r in resumed] == [r["samples"] for r in full]


def test_distill_recipe_on_two_data_parallel_engines(engine, tmp_path):
    # `accelerate launch --num_processes 2` with use_vllm: one engine per process (its own CPU core here), each
    # generating its shard of the prompts; the samples are those of one engine in one process, then SFT trains
    from aisp_trl.config import AISPConfig
    from aisp_trl.pipeline import default_state, load_records, run_generation
    from aisp_trl.rewards import build_reward

    out = tmp_path / "distill"
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
              "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
              "--main_process_port", str(_free_port())]  # fmt: skip
    recipe = [str(ROOT / "recipes" / "distill_aisp.py"), "--config", str(ROOT / "recipes/configs/distill_smollm2.yaml"),
              "--use_vllm", "true", "--max_prompts", "8", "--num_eval_prompts", "2", "--sample_size", "2",
              "--n_iterations", "2", "--max_new_tokens", "8", "--max_steps", "1", "--output_dir", str(out)]  # fmt: skip
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([*launch, *recipe], cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    shards = sorted((out / "aisp" / "shards").glob("records-*.jsonl"))
    assert [len(s.read_text().splitlines()) for s in shards] == [4, 4]  # both engines worked
    report = json.loads((out / "report.json").read_text())
    assert report["counts"] == {"train_prompts": 8, "eval_prompts": 2, "sft_rows": 8}
    assert report["training"]["steps"] == 1

    records = load_records(out / "aisp")
    settings = json.loads((out / "aisp" / "aisp_run.json").read_text())
    llm, tok = engine
    one = run_generation(llm, tok, build_reward("vader"), [r["prompt_input"] for r in records],
                         AISPConfig(**settings["aisp"]), tmp_path / "one", default_state(), max_new_tokens=8,
                         show_progress=False)  # fmt: skip
    assert [[s["text"] for s in r["samples"]] for r in one] == [[s["text"] for s in r["samples"]] for r in records]


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_bench_finetune_generates_on_vllm(engine, tmp_path):
    # benchmarks/bench_finetune.py --use_vllm: the training data and AISP's held-out answers come from one vLLM
    # engine (for the seed, the samples the engine gives through run_generation), while the HF model decodes the
    # greedy evaluations and trains; the units record the engine, so that they never mix with HF-made ones
    from aisp_trl.config import AISPConfig
    from aisp_trl.pipeline import default_state, load_records, run_generation
    from aisp_trl.rewards import build_reward

    out = tmp_path / "bench"
    command = [sys.executable, str(ROOT / "benchmarks" / "bench_finetune.py"), "--use_vllm", "--rewards", "vader",
               "--seeds", "0", "--num_train_prompts", "4", "--num_eval_prompts", "2", "--sample_size", "2",
               "--n_iterations", "2", "--max_new_tokens", "8", "--max_steps", "1", "--per_device_train_batch_size",
               "2", "--keep_nonpositive_margin", "--threads", "1", "--output_dir", str(out)]  # fmt: skip
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    units = out / "units" / "vader"
    assert json.loads((units / "data_aisp" / "seed0.json").read_text())["settings"]["generation_engine"] == "vllm"
    report = json.loads((out / "report.json").read_text())
    models = report["rewards"]["vader"]["models"]
    assert set(models) == {"base", "aisp", "sft_aisp", "sft_bon_top_p", "dpo_aisp", "dpo_bon_top_p"}
    assert all(
        len(json.loads((units / n / "seed0.json").read_text())["rewards"]) == 2 for n in ("aisp_held_out", "dpo_aisp")
    )

    data = out / "data" / "vader" / "aisp" / "seed0"
    records = load_records(data)
    assert len(records) == 4 and all(len(r["samples"]) == 4 for r in records)
    settings = json.loads((data / "aisp_run.json").read_text())
    llm, tok = engine
    again = run_generation(llm, tok, build_reward("vader"), [r["prompt_input"] for r in records],
                           AISPConfig(**settings["aisp"]), tmp_path / "again", default_state(), max_new_tokens=8,
                           show_progress=False)  # fmt: skip
    assert [[s["text"] for s in r["samples"]] for r in again] == [[s["text"] for s in r["samples"]] for r in records]
