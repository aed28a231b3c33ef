"""What the benchmarks share: argument types, a quiet TensorFlow, and the environment of child processes.

The benchmarks import the library (``generator``), never its command line (``generator.cli``);
where they time a command as a user runs it, they start it in a child process.
"""

from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]  # the source checkout that holds benchmarks/


from generator.argtypes import fraction, int_range, positive_float  # noqa: E402,F401 (the benchmarks' flags)


def quiet_tensorflow() -> None:
    """Import TensorFlow with its log lines and Python warnings silenced."""
    import warnings

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    warnings.filterwarnings("ignore")
    import tensorflow as tf

    tf.get_logger().setLevel("ERROR")
    tf.autograph.set_verbosity(0)


def child_env(**extra: str) -> dict:
    """The environment for a child process that imports ``benchmarks`` from any working directory."""
    paths = [str(ROOT), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(paths), **extra}
