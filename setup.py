"""The project's one compiled part: the batch-1 LSTM decoder in C (generator/generation/native_lstm.c).

Everything else is declared in pyproject.toml. The extension is optional: where it cannot be
built (no C compiler, no POSIX threads), the install goes on and decoding runs in TensorFlow.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "generator.generation._native_lstm",
            sources=["generator/generation/native_lstm.c"],
            extra_compile_args=["-O3", "-pthread"],
            extra_link_args=["-pthread"],
            optional=True,
        )
    ]
)
