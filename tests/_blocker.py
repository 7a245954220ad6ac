"""A child interpreter without the optional stack: trl, datasets, vaderSentiment, gguf, vLLM (absent on the GPU
machine), peft and matplotlib (a user may lack them too) look uninstalled. ``sys.modules[name] = None`` makes ``import
name`` raise and ``importlib.util.find_spec(name)`` return ``None``, as for a missing package."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

BLOCKED = ("trl", "datasets", "vaderSentiment", "gguf", "vllm", "peft", "matplotlib")
"""Top-level packages the child process cannot import."""

PRELUDE = f"""
import sys
BLOCKED = {BLOCKED!r}
for name in BLOCKED:
    sys.modules[name] = None  # as if not installed: import raises, importlib.util.find_spec returns None


def leaked():
    return sorted(n for n, m in sys.modules.items() if m is not None and n.split(".")[0] in BLOCKED)
"""


def run_blocked(code: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """Runs ``code`` after `PRELUDE` in a fresh interpreter (cwd: the repository) with the repository and ``tests/``
    on the path; the code can call ``leaked()`` for the blocked modules that got imported anyway."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "tests")]), "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, "-c", PRELUDE + code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout
    )
