"""A stacked-LSTM generator of music and text (Keras 3 / TensorFlow).

The public API is re-exported here; see ``generator.api``.
"""

__version__ = "0.1.0"

from generator.config import SamplingOptions  # noqa: E402
from generator.errors import ArgumentError, GeneratorError  # noqa: E402


def __getattr__(name):
    # Importing TensorFlow takes seconds: load the API lazily so `generator --help` stays fast.
    if name in ("load", "train", "Generator"):
        from generator import api

        return getattr(api, name)
    raise AttributeError(name)


__all__ = ["ArgumentError", "GeneratorError", "Generator", "SamplingOptions", "load", "train", "__version__"]
