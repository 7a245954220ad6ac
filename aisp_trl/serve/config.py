"""`ServeArguments`: what ``aisp-trl serve`` loads at start-up and the limits it enforces on every request."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..models import EMBEDDED_MODEL

DEFAULT_REWARDS = ["vader", "relevance", "judge"]
"""The rewards registered when ``--reward`` is not given, each under its own name."""


@dataclass
class ServeArguments:
    """Start-up settings of ``aisp-trl serve``, grouped as: the model, the rewards, the network, the limits, batching.

    Every field is a command-line flag (``--name value``) and a key of a ``--config`` YAML file. Values are checked in
    ``__post_init__``: an error names the argument, shows the value and says the fix.

    Example:
        ```python
        >>> from aisp_trl.serve import ServeArguments
        >>> ServeArguments(reward=["len=mypkg.rewards:length"], port=8001).max_batch_size
        8
        ```
    """

    # Parameters that control the model
    model_name_or_path: str = field(
        default=EMBEDDED_MODEL,
        metadata={"help": f"Causal LM: '{EMBEDDED_MODEL}' (embedded, offline) or a Hub id / local folder."},
    )
    served_model_name: str | None = field(
        default=None,
        metadata={"help": "The `model` name clients send and /v1/models lists (default: the folder's or Hub name)."},
    )
    dtype: str = field(default="float32", metadata={"help": "Model dtype: float32, bfloat16 or float16."})
    device: str | None = field(default=None, metadata={"help": "cpu, cuda, cuda:1, ... (default: cuda if present)."})
    use_vllm: bool = field(
        default=False,
        metadata={
            "help": "Decode on a vLLM engine (aisp_trl.vllm.load_llm) instead of transformers. The tie check that "
            "makes batched answers identical to alone ones needs the HF model's logits and is off with vLLM."
        },
    )
    torch_threads: int | None = field(
        default=None, metadata={"help": "torch.set_num_threads for the model's thread (default: torch's choice)."}
    )

    # Parameters that control the rewards
    reward: list[str] | None = field(
        default=None,
        metadata={
            "help": "NAME=SPEC, repeatable: registers a reward requests pick by NAME (`reward` field). SPEC: 'vader', "
            "'relevance', 'judge', a sequence-classification reward-model folder / Hub id, several joined by '+' "
            "(averaged), or 'module:function' (a Python callable list[str] -> list[float] on the full texts). A bare "
            "SPEC registers under its own name. Default: vader, relevance and judge. The first is the default reward."
        },
    )
    reward_max_length: int = field(default=1024, metadata={"help": "Reward-model inputs are truncated to this."})

    # Parameters that control the network
    host: str = field(default="127.0.0.1", metadata={"help": "Interface to listen on (0.0.0.0: every interface)."})
    port: int = field(default=8000, metadata={"help": "TCP port (0: a free port, printed at start)."})
    api_key: str | None = field(
        default=None,
        metadata={"help": "When set, /v1/* requests need `Authorization: Bearer <api_key>` (401 otherwise)."},
    )

    # Parameters that control the per-request limits
    max_budget: int = field(
        default=256, metadata={"help": "Largest sample budget N = sample_size * n_iterations a request may ask for."}
    )
    max_new_tokens: int = field(default=256, metadata={"help": "Largest `max_tokens` (horizon) a request may ask for."})
    default_max_tokens: int = field(default=32, metadata={"help": "The horizon of a request without `max_tokens`."})
    max_queue_size: int = field(
        default=64, metadata={"help": "Requests waiting for the model at most; one more gets HTTP 429."}
    )
    request_timeout: float = field(
        default=600.0, metadata={"help": "Seconds a request may wait and run in all; then HTTP 504 (its work stops)."}
    )

    # Parameters that control batching
    max_batch_size: int = field(
        default=8, metadata={"help": "Requests with the same settings searched together in one Batched AISP call."}
    )
    batch_wait_ms: float = field(
        default=10.0, metadata={"help": "How long the first request of a batch waits for others with its settings."}
    )
    tie_margin: float = field(
        default=5e-4,
        metadata={
            "help": "A query of a batch whose decode came within this logit margin of an argmax tie is searched again "
            "alone, so that every answer equals its alone-run: floating-point sums change with the batch's shape "
            "(at most 1.4e-4 per logit measured on SmolLM2-135M in float32; a tie within twice that can flip). The "
            "default is for float32; half precision moves logits by ~1e-2 (raise it: more queries rerun). 0 switches "
            "the check off: faster, answers equal alone ones up to such ties."
        },
    )

    def __post_init__(self) -> None:
        if self.reward is None:
            self.reward = list(DEFAULT_REWARDS)
        elif isinstance(self.reward, str):
            self.reward = [self.reward]
        if not self.reward:
            raise ValueError("`reward` is empty; pass at least one, e.g. --reward vader.")
        for name in ("max_budget", "max_new_tokens", "default_max_tokens", "max_queue_size", "max_batch_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"`{name}` must be an integer >= 1, got {value!r}; pass a positive integer.")
        if self.default_max_tokens > self.max_new_tokens:
            raise ValueError(
                f"`default_max_tokens` ({self.default_max_tokens}) exceeds `max_new_tokens` ({self.max_new_tokens}); "
                "lower it or raise `max_new_tokens`."
            )
        if self.reward_max_length < 1:
            raise ValueError(f"`reward_max_length` must be >= 1, got {self.reward_max_length}.")
        if isinstance(self.port, bool) or not isinstance(self.port, int) or not 0 <= self.port <= 65535:
            raise ValueError(f"`port` must be an integer in [0, 65535], got {self.port!r}; e.g. --port 8000.")
        if not self.host:
            raise ValueError("`host` is empty; pass e.g. --host 127.0.0.1.")
        if self.api_key is not None and not self.api_key.strip():
            raise ValueError("`api_key` is blank; pass a non-empty key or leave it unset (no authentication).")
        for name in ("request_timeout", "batch_wait_ms", "tie_margin"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or value != value or value < 0:
                raise ValueError(f"`{name}` must be a number >= 0, got {value!r}.")
        if self.request_timeout == 0:
            raise ValueError("`request_timeout` must be > 0 seconds, got 0; e.g. --request_timeout 600.")
        if self.torch_threads is not None and (
            isinstance(self.torch_threads, bool) or not isinstance(self.torch_threads, int) or self.torch_threads < 1
        ):
            raise ValueError(f"`torch_threads` must be an integer >= 1, got {self.torch_threads!r}.")
