"""``aisp-trl serve``: load the model and rewards once, then serve AISP behind the OpenAI API with uvicorn.

aisp-trl serve                                          # SmolLM2-135M-Instruct; rewards vader, relevance, judge
aisp-trl serve --reward pos=vader --reward rel=relevance --port 8001 --api_key secret
aisp-trl serve --model_name_or_path Qwen/Qwen2.5-0.5B-Instruct \
    --reward rm=OpenAssistant/reward-model-deberta-v3-large-v2
aisp-trl serve --config serve.yaml                      # any flag as a YAML key

Then, with the official client:

    from openai import OpenAI
    client = OpenAI(base_url="http://127.0.0.1:8000/v1", api_key="unused")
    reply = client.chat.completions.create(
        model="smollm2-135m-instruct", messages=[{"role": "user", "content": "Describe your commute."}],
        max_tokens=32, seed=0, extra_body={"budget": 32, "reward": "vader"})
    print(reply.choices[0].message.content, reply.model_extra["aisp"]["best_reward"])

SIGTERM (or Ctrl-C) stops taking connections, finishes the requests already in, and exits.
"""

from __future__ import annotations

import logging
import socket
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from trl import TrlParser

from .config import ServeArguments

if TYPE_CHECKING:
    from fastapi import FastAPI

    from .engine import Engine

PROG = "aisp-trl serve"


def make_parser(prog: str = PROG) -> TrlParser:
    """The parser of ``aisp-trl serve``: the fields of `ServeArguments` (and ``--config FILE.yaml``)."""
    return TrlParser(
        (ServeArguments,),
        prog=prog,
        description="AISP behind an OpenAI-compatible endpoint (/v1/chat/completions, /v1/completions, /v1/models, "
        "/health). Every flag is also a key of the YAML file given with --config.",
        epilog="--reward is repeatable: --reward pos=vader --reward rel=relevance. --debug (or AISP_TRL_DEBUG=1): "
        "tracebacks for errors.",
    )


def merge_repeated(argv: list[str], flag: str) -> list[str]:
    """``--reward a --reward b=c`` -> ``--reward a b=c`` (argparse keeps only the last of a repeated list flag)."""
    values, rest, i = [], [], 0
    while i < len(argv):
        arg = argv[i]
        if arg == flag:
            i += 1
            while i < len(argv) and not argv[i].startswith("--"):
                values.append(argv[i])
                i += 1
            continue
        if arg.startswith(flag + "="):
            values.append(arg[len(flag) + 1 :])
        else:
            rest.append(arg)
        i += 1
    return rest + ([flag, *values] if values else [])


def parse_args(argv: list[str], prog: str = PROG) -> ServeArguments:
    """`ServeArguments` from the command line (repeated ``--reward`` flags merged)."""
    (args,) = make_parser(prog).parse_args_and_config(merge_repeated(list(argv), "--reward"))
    return args


def served_name(args: ServeArguments) -> str:
    """The ``model`` name clients send: ``--served_model_name``, else the folder's name or the Hub id."""
    if args.served_model_name:
        return args.served_model_name
    path = Path(args.model_name_or_path)
    return path.name if path.is_dir() else args.model_name_or_path


def build_server(args: ServeArguments) -> tuple[FastAPI, Engine]:
    """Loads the model and the rewards (once) and returns ``(app, engine)``.

    Raises:
        ValueError, OSError: bad reward specs, a model or device that cannot be loaded.
    """
    import torch

    from ..models import check_device, load_model_and_tokenizer
    from .app import create_app
    from .engine import Engine
    from .protocol import Limits
    from .rewards import build_rewards, parse_reward_flags

    parse_reward_flags(args.reward)  # a bad flag fails before the model loads
    check_device(args.device)
    if args.torch_threads is not None:
        torch.set_num_threads(args.torch_threads)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if args.use_vllm:
        from ..vllm import load_llm, load_tokenizer

        model, tokenizer = load_llm(args.model_name_or_path), load_tokenizer(args.model_name_or_path)
    else:
        model, tokenizer = load_model_and_tokenizer(args.model_name_or_path, dtype=args.dtype, device=device)
    if args.tie_margin == ServeArguments.tie_margin and args.dtype not in ("float32", "auto") and not args.use_vllm:
        logging.getLogger(__name__).warning(
            "--tie_margin %g is calibrated for float32; in %s logits move by more with the batch shape, so batched "
            "answers may differ from alone ones: raise --tie_margin (e.g. 0.05; more queries run again alone).",
            args.tie_margin,
            args.dtype,
        )
    rewards = build_rewards(args.reward, device, args.reward_max_length)
    engine = Engine(
        model,
        tokenizer,
        rewards,
        max_queue_size=args.max_queue_size,
        max_batch_size=args.max_batch_size,
        batch_wait=args.batch_wait_ms / 1000,
        tie_margin=args.tie_margin,
        use_vllm=args.use_vllm,
    )
    limits = Limits(
        model_name=served_name(args),
        rewards=tuple(rewards),
        max_budget=args.max_budget,
        max_new_tokens=args.max_new_tokens,
        default_max_tokens=args.default_max_tokens,
        context_length=engine.context_length,
    )
    app = create_app(engine, limits, api_key=args.api_key, request_timeout=args.request_timeout)
    return app, engine


def serve(args: ServeArguments) -> None:
    """Builds the server and runs it until SIGTERM / SIGINT (graceful: running requests finish)."""
    try:
        import uvicorn
    except ImportError:
        raise OSError("`aisp-trl serve` needs uvicorn and fastapi: pip install fastapi uvicorn") from None
    sock = socket.socket(socket.AF_INET6 if ":" in args.host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((args.host, args.port))  # bound before the model loads: a taken port fails in a second
    except OSError as error:
        sock.close()
        raise OSError(f"`port` {args.port} on `host` {args.host!r} cannot be used ({error}); pick another.") from None
    app, _ = build_server(args)
    host, port = sock.getsockname()[:2]
    config = uvicorn.Config(
        app, log_level="info", timeout_graceful_shutdown=int(args.request_timeout) + 1, access_log=False
    )
    print(f"{PROG}: serving {served_name(args)!r} on http://{host}:{port}/v1", file=sys.stderr, flush=True)
    uvicorn.Server(config).run(sockets=[sock])


def main(argv: list[str], prog: str = PROG) -> None:
    """Parses ``argv`` (the flags after ``serve``) and serves; `aisp_trl.cli.main` wraps it so that user errors print
    one line and exit with status 2."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    serve(parse_args(argv, prog))
