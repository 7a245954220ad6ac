"""Decoder wrappers the engine puts around a batch's decoder: a tie check and a stop / progress hook.

`TieGuardDecoder` is how a batched answer is made identical to the same request's alone-run. Batching changes the
shapes of the model's matrix products (more rows, left padding to the batch's longest prompt), and CPU and GPU
kernels pick their blocking, hence the order of floating-point sums, by shape: the same row's logits differ between
batch shapes even for equal-length prompts (on SmolLM2-135M in float32, CPU, AISP alone vs in batches of 8, 12 and
24 prompts: at most 1.4e-4 per logit, median 3.5e-5, over 9117 decoding steps). Greedy decoding then picks the same
token unless the two largest logits lie within twice that. The wrapper records, at every generated step of every
row, the margin between the two largest logits the output layer produced (after the pre-logit perturbation); a
query with a margin below ``margin`` at a step that counts (before its row's end) is flagged, and the engine
searches it again alone. By induction over steps the batched tokens then equal the alone ones, as long as batching
moves no logit by more than ``margin / 2`` (the measured bound above for the float32 default of 5e-4). Everything
else about a query (its noise stream, its horizon, its rewards: see `aisp_trl.serve.rewards.PerQueryReward`)
already depends only on the query itself.

`StoppableDecoder` lets the engine abandon a batch whose clients all left (checked before every decode call) and
counts decode calls for the progress comments of a streamed response.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn


class SearchAbandoned(Exception):
    """Raised inside a search when every request of its batch was cancelled (client gone, timeout)."""


class TieGuardDecoder:
    """Wraps a `Decoder`; after each greedy call, flags the queries whose decode came within ``margin`` of a tie.

    Args:
        decoder (`Decoder`): the sampler's decoder (an `HFDecoder`).
        output_layer (`nn.Module`): the model's output layer (`aisp_trl.find_output_layer`), whose outputs are the
            logits greedy decoding takes the argmax of.
        margin (`float`): the smallest top-1 minus top-2 logit gap trusted to survive a change of batch shape.

    Attributes:
        flagged (`set[tuple[int, ...]]`): token ids of the queries to search again alone.
        smallest (`float`): the smallest margin seen at a counted step (for logs and tests).
    """

    def __init__(self, decoder: Any, output_layer: nn.Module, margin: float):
        self.decoder, self.output_layer, self.margin = decoder, output_layer, margin
        self.flagged: set[tuple[int, ...]] = set()
        self.smallest = float("inf")

    def greedy(self, rows: list[list[int]], horizons: list[int], config: Any, *args: Any, **kwargs: Any) -> list:
        records: list[Tensor] = []

        def record(module: nn.Module, inputs: Any, output: Tensor) -> None:
            # generate runs the output layer on (rows, 1, d) at every step, its prefill included; the prompt-cache
            # forward of the decoder runs it on (distinct queries, length - 1, d) and is skipped by shape
            if output.ndim == 3 and output.shape[0] == len(rows) and output.shape[1] == 1:
                top = output[:, -1].float().topk(2, dim=-1).values
                records.append((top[:, 0] - top[:, 1]).cpu())

        handle = self.output_layer.register_forward_hook(record)
        try:
            completions = self.decoder.greedy(rows, horizons, config, *args, **kwargs)
        finally:
            handle.remove()
        steps = max((len(c) for c in completions), default=0)  # generate's steps: until every row ended
        if steps and len(records) >= steps:
            margins = torch.stack(records[-steps:])  # (steps, rows)
            for i, (row, completion) in enumerate(zip(rows, completions, strict=True)):
                if not completion:
                    continue
                smallest = float(margins[: len(completion), i].min())
                self.smallest = min(self.smallest, smallest)
                if smallest < self.margin:
                    self.flagged.add(tuple(row))
        elif steps:  # the recording missed steps: trust nothing of this call
            self.flagged.update(tuple(row) for row in rows)
        return completions

    def sample(self, *args: Any, **kwargs: Any) -> list:
        # sampled decoding (BoN top-p) runs one query at a time, at the shape of its alone-run: nothing to check
        return self.decoder.sample(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.decoder, name)


class StoppableDecoder:
    """Wraps a `Decoder`: before each call, raises `SearchAbandoned` when ``should_stop()``; after it, calls
    ``on_decode()`` (one call per AISP iteration and prompt batch)."""

    def __init__(self, decoder: Any, should_stop: Callable[[], bool], on_decode: Callable[[], None]):
        self.decoder, self.should_stop, self.on_decode = decoder, should_stop, on_decode

    def greedy(self, *args: Any, **kwargs: Any) -> list:
        return self._call(self.decoder.greedy, *args, **kwargs)

    def sample(self, *args: Any, **kwargs: Any) -> list:
        return self._call(self.decoder.sample, *args, **kwargs)

    def _call(self, method: Callable[..., list], *args: Any, **kwargs: Any) -> list:
        if self.should_stop():
            raise SearchAbandoned
        completions = method(*args, **kwargs)
        self.on_decode()
        return completions

    def __getattr__(self, name: str) -> Any:
        return getattr(self.decoder, name)
