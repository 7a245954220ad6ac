"""``aisp-trl serve`` under load: requests per second and p50 / p95 latency at 1, 4 and 16 concurrent clients,
side by side with the same searches run in this process (all queries in one batched ``search`` call, and one by one).

Every setup answers the same ``--num_prompts`` built-in prompts with the same settings (AISP, one seed, one reward), so
every answer must equal its alone-run (the in-process one-by-one search): the table counts the answers that do. The
server runs in a subprocess on 127.0.0.1 (``--torch_threads`` for both processes, OMP pinned too), with batches of up
to ``--max_batch_size`` requests; each of the C clients sends its share of the prompts one after the other with the
official ``openai`` client. Latency is per request (the in-process batched search: the whole call, which every query
waits for; one by one: each search). The in-process batched search runs before and after the server's runs (the
faster one is the reference: the machine may be shared), and CPU seconds per request (the searching process's user +
system time: this one, or the server's) sit next to wall-clock throughput. Prints a markdown table and writes the
JSON to ``--output``.

```bash
# SmolLM2-135M-Instruct, VADER, 16 prompts, n = 4, kappa = 2, 16 tokens: a few minutes on 2 CPU cores
python benchmarks/bench_serve.py --output outputs/bench_serve.json
python benchmarks/bench_serve.py --sample_size 8 --n_iterations 4 --max_new_tokens 32 --clients 1 4 16 32
```
"""

from __future__ import annotations

import concurrent.futures
import json
import math
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from trl import TrlParser

from aisp_trl import AISPSampler, LengthSampler
from aisp_trl.models import EMBEDDED_MODEL, load_model_and_tokenizer
from aisp_trl.prompts import apply_chat_template, builtin_prompts
from aisp_trl.serve.rewards import build_spec


@dataclass
class BenchServeArguments:
    """What to serve and measure."""

    model_name_or_path: str = field(default=EMBEDDED_MODEL, metadata={"help": "Causal LM (default: embedded SmolLM2)."})
    reward: str = field(default="vader", metadata={"help": "The reward (a SPEC of `aisp-trl serve --reward`)."})
    num_prompts: int = field(default=16, metadata={"help": "Requests per setup: the first built-in prompts."})
    sample_size: int = field(default=4, metadata={"help": "n: samples per AISP iteration."})
    n_iterations: int = field(default=2, metadata={"help": "kappa: AISP iterations."})
    max_new_tokens: int = field(default=16, metadata={"help": "The horizon (`max_tokens`)."})
    seed: int = field(default=0, metadata={"help": "The seed of every request (one spec: requests batch together)."})
    clients: list[int] = field(default_factory=lambda: [1, 4, 16], metadata={"help": "Concurrent client counts."})
    max_batch_size: int = field(default=16, metadata={"help": "The server's --max_batch_size."})
    batch_wait_ms: float = field(default=50.0, metadata={"help": "The server's --batch_wait_ms."})
    tie_margin: float | None = field(default=None, metadata={"help": "The server's --tie_margin (default: its own)."})
    torch_threads: int = field(default=1, metadata={"help": "torch threads of this process and of the server."})
    output: str = field(default="outputs/bench_serve.json", metadata={"help": "The JSON file."})

    def __post_init__(self) -> None:
        for name in ("num_prompts", "sample_size", "n_iterations", "max_new_tokens", "max_batch_size", "torch_threads"):
            if getattr(self, name) < 1:
                raise ValueError(f"`{name}` must be >= 1, got {getattr(self, name)}.")
        if not self.clients or min(self.clients) < 1:
            raise ValueError(f"`clients` must list counts >= 1, got {self.clients}.")


def process_cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of a process (Linux ``/proc``; None elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def latency_stats(
    name: str, wall: float, latencies: list[float], answers: list[dict], alone: list[dict], cpu: float | None
) -> dict:
    """One row: throughput, p50 / p95 latency, CPU seconds, and how many answers equal their alone-run."""
    ordered = sorted(latencies)
    p95 = ordered[math.ceil(0.95 * len(ordered)) - 1]  # nearest rank
    same = sum(a == b for a, b in zip(answers, alone, strict=True))
    return {
        "setup": name,
        "requests": len(answers),
        "wall_seconds": wall,
        "requests_per_second": len(answers) / wall,
        "p50_seconds": statistics.median(ordered),
        "p95_seconds": p95,
        "identical_to_alone": same,
        "cpu_seconds": cpu,
        "cpu_seconds_per_request": None if cpu is None else cpu / len(answers),
    }


def answer_of(result: Any) -> dict:
    """What must not change with batching: the best completion, its reward, the tokens billed."""
    return {
        "completion": result.best.completion,
        "reward": result.best.reward,
        "completion_tokens": sum(len(s.completion_ids) for s in result.samples),
    }


class InProcess:
    """The searches in this process, on a fresh sampler per call (as the server builds one per batch)."""

    def __init__(self, args: BenchServeArguments, prompts: list[str]):
        self.args, self.prompts = args, prompts
        self.model, self.tokenizer = load_model_and_tokenizer(args.model_name_or_path)
        self.reward = build_spec(args.reward)
        texts = apply_chat_template(self.tokenizer, prompts)
        self.queries = [self.tokenizer(t, add_special_tokens=False).input_ids for t in texts]
        self.search([0])  # warm-up

    def search(self, indices: list[int]) -> list[dict]:
        args = self.args
        sampler = AISPSampler(
            self.model, self.tokenizer, self.reward, LengthSampler(args.max_new_tokens, args.max_new_tokens + 1),
            sample_size=args.sample_size, n_iterations=args.n_iterations, seed=args.seed,
            prompt_batch_size=len(indices),
        )  # fmt: skip
        results = sampler.search([self.queries[i] for i in indices], prompts=[self.prompts[i] for i in indices])
        return [answer_of(r) for r in results]

    def one_by_one(self) -> tuple[dict, list[dict]]:
        """Every prompt alone: the alone-runs every other setup must reproduce."""
        alone, latencies = [], []
        start, cpu = time.perf_counter(), time.process_time()
        for i in range(len(self.prompts)):
            begin = time.perf_counter()
            alone.extend(self.search([i]))
            latencies.append(time.perf_counter() - begin)
        wall, cpu = time.perf_counter() - start, time.process_time() - cpu
        return latency_stats("in process, one by one", wall, latencies, alone, alone, cpu), alone

    def batched(self, alone: list[dict], when: str) -> dict:
        """All prompts in one batched search call."""
        start, cpu = time.perf_counter(), time.process_time()
        answers = self.search(list(range(len(self.prompts))))
        wall, cpu = time.perf_counter() - start, time.process_time() - cpu
        name = f"in process, one batched search ({when})"
        return latency_stats(name, wall, [wall] * len(answers), answers, alone, cpu)


class ServerProcess:
    """``aisp-trl serve`` in a subprocess on 127.0.0.1 (a free port)."""

    def __init__(self, args: BenchServeArguments, log: Path):
        threads = str(args.torch_threads)
        env = {**os.environ, "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads}
        command = [sys.executable, "-m", "aisp_trl.serve", "--model_name_or_path", args.model_name_or_path]
        command += ["--reward", f"bench={args.reward}", "--port", "0", "--torch_threads", threads]
        command += ["--max_batch_size", str(args.max_batch_size), "--batch_wait_ms", str(args.batch_wait_ms)]
        command += ["--max_queue_size", str(max(64, args.num_prompts)), "--served_model_name", "bench"]
        if args.tie_margin is not None:
            command += ["--tie_margin", str(args.tie_margin)]
        self.log = log
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=log.open("w"), env=env)
        deadline, self.url = time.monotonic() + 600, ""
        import httpx

        while time.monotonic() < deadline and not self.url:
            if self.process.poll() is not None:
                raise RuntimeError(f"the server exited:\n{log.read_text()}")
            match = re.search(r"on (http://127\.0\.0\.1:\d+)/v1", log.read_text())
            if match:
                try:
                    if httpx.get(f"{match.group(1)}/health", timeout=2).status_code == 200:
                        self.url = match.group(1)
                except httpx.TransportError:
                    pass
            time.sleep(0.2)
        if not self.url:
            raise RuntimeError(f"the server did not start in 600 s:\n{log.read_text()}")

    def health(self) -> dict:
        import httpx

        return httpx.get(f"{self.url}/health", timeout=10).json()

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)


def over_http(args: BenchServeArguments, prompts: list[str], alone: list[dict]) -> tuple[list[dict], dict]:
    """The same searches through the server at each client count."""
    from openai import OpenAI

    with tempfile.TemporaryDirectory() as folder:
        server = ServerProcess(args, Path(folder) / "serve.log")
        try:
            client = OpenAI(base_url=f"{server.url}/v1", api_key="unused", timeout=600, max_retries=0)
            extra = {"sample_size": args.sample_size, "n_iterations": args.n_iterations, "reward": "bench"}

            def ask(prompt: str) -> tuple[dict, float]:
                begin = time.perf_counter()
                reply = client.chat.completions.create(
                    model="bench", messages=[{"role": "user", "content": prompt}], max_tokens=args.max_new_tokens,
                    seed=args.seed, extra_body=extra,
                )  # fmt: skip
                info = reply.model_extra["aisp"]
                answer = {
                    "completion": reply.choices[0].message.content,
                    "reward": info["best_reward"],
                    "completion_tokens": reply.usage.completion_tokens,
                }
                return answer, time.perf_counter() - begin

            ask(prompts[0])  # warm-up
            rows = []
            for clients in args.clients:
                before, cpu = server.health(), process_cpu_seconds(server.process.pid)

                def client_loop(first: int, count: int = clients) -> list[tuple[int, dict, float]]:
                    return [(i, *ask(prompts[i])) for i in range(first, len(prompts), count)]

                start = time.perf_counter()
                with concurrent.futures.ThreadPoolExecutor(clients) as pool:
                    done = [item for part in pool.map(client_loop, range(min(clients, len(prompts)))) for item in part]
                wall = time.perf_counter() - start
                done.sort(key=lambda item: item[0])
                after, cpu_after = server.health(), process_cpu_seconds(server.process.pid)
                row = latency_stats(
                    f"server, {clients} client{'s' if clients > 1 else ''}",
                    wall,
                    [item[2] for item in done],
                    [item[1] for item in done],
                    alone,
                    None if cpu is None or cpu_after is None else cpu_after - cpu,
                )
                row["batches"] = after["batches"] - before["batches"]
                row["reruns_alone"] = after["reruns_alone"] - before["reruns_alone"]
                rows.append(row)
                print(f"{row['setup']}: {row['requests_per_second']:.3f} req/s", file=sys.stderr, flush=True)
            return rows, server.health()
        finally:
            server.stop()


def markdown(rows: list[dict], settings: dict) -> str:
    # the faster of the two in-process batched runs (before / after the server's): the harder reference
    reference = max((r for r in rows if "batched" in r["setup"]), key=lambda r: r["requests_per_second"])
    batched, batched_cpu = reference["requests_per_second"], reference["cpu_seconds_per_request"]
    lines = [
        "| setup | requests | wall s | req/s | vs in-process batched | p50 s | p95 s | CPU s / req | CPU vs batched | "
        "batches | reruns alone | identical to alone |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        cpu = r["cpu_seconds_per_request"]
        cpu_cells = ("—", "—") if cpu is None or not batched_cpu else (f"{cpu:.2f}", f"{batched_cpu / cpu:.2f}x")
        lines.append(
            f"| {r['setup']} | {r['requests']} | {r['wall_seconds']:.1f} | {r['requests_per_second']:.3f} | "
            f"{r['requests_per_second'] / batched:.2f}x | {r['p50_seconds']:.2f} | {r['p95_seconds']:.2f} | "
            f"{cpu_cells[0]} | {cpu_cells[1]} | {r.get('batches', '—')} | {r.get('reruns_alone', '—')} | "
            f"{r['identical_to_alone']}/{r['requests']} |"
        )
    lines += [
        "",
        f"{settings['model_name_or_path']}, reward {settings['reward']}, AISP n = {settings['sample_size']}, kappa = "
        f"{settings['n_iterations']}, {settings['max_new_tokens']} tokens, seed {settings['seed']}, "
        f"{settings['num_prompts']} built-in prompts; server: --max_batch_size {settings['max_batch_size']} "
        f"--batch_wait_ms {settings['batch_wait_ms']:g} --tie_margin {settings['tie_margin']}; "
        f"{settings['torch_threads']} torch thread(s) per process. CPU s / req: the CPU time of the process that "
        'searched (this one, or the server\'s: model thread, event loop and HTTP), per request; "vs batched" columns '
        "are throughput ratios (> 1: faster than the in-process batched search).",
    ]
    return "\n".join(lines)


def main(args: BenchServeArguments) -> dict:
    """Runs the in-process searches, then the server at each client count; prints and writes the results."""
    torch.set_num_threads(args.torch_threads)
    prompts = builtin_prompts(args.num_prompts)
    local = InProcess(args, prompts)
    one_by_one, alone = local.one_by_one()
    rows = [one_by_one, local.batched(alone, "before")]
    speeds = " / ".join(f"{r['requests_per_second']:.3f}" for r in rows)
    print(f"in process (one by one / batched): {speeds} req/s", file=sys.stderr, flush=True)
    http_rows, health = over_http(args, prompts, alone)
    rows.append(local.batched(alone, "after"))
    settings = asdict(args)
    if settings["tie_margin"] is None:
        from aisp_trl.serve import ServeArguments

        settings["tie_margin"] = ServeArguments.tie_margin
    rows = rows[:2] + http_rows + rows[2:]
    report = {"settings": settings, "rows": rows, "server_health": health, "alone_answers": alone}
    print(markdown(report["rows"], settings))
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    (arguments,) = TrlParser((BenchServeArguments,)).parse_args_and_config()
    main(arguments)
