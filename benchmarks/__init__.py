"""The benchmarks: speed and quality measurements, run from a source checkout (not installed).

``python -m benchmarks.suite`` (also ``generator bench``) measures speed and memory against
their baselines; the other modules are the measurements of docs/benchmarks.md and
docs/results.md, each with its command in its docstring. They use the library, never its
command line (``generator.cli``), except to time a command in a child process as a user runs it.
"""
