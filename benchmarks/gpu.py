"""The benchmark suite on a GPU, when one is visible: ``python -m benchmarks.gpu [--write-docs]``.

On a machine whose TensorFlow sees a GPU it times, at the suite's sizes: the trainer as
``generator train`` runs it there (Keras's LSTM layers on cuDNN, no XLA), the same with float16
and with bfloat16 mixed precision, Keras ``fit``, and sampling at batch 1 and 64 with the peak of
TensorFlow's matmul at the step's shapes on that GPU. It prints the figures with the device's
name and, with ``--write-docs``, puts them in docs/results.md. On a CPU-only machine it says so
and exits without measuring anything (exit status 0).
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from benchmarks.common import ROOT, quiet_tensorflow

START, END = "<!-- benchmarks/gpu.py --write-docs: start -->", "<!-- benchmarks/gpu.py --write-docs: end -->"
TRAIN_VARIANTS = ["project", "project_float16", "project_bfloat16", "keras_fit"]


def gpu_name() -> str | None:
    """The name of the first GPU TensorFlow sees, or None on a CPU-only machine."""
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    if not gpus:
        return None
    details = tf.config.experimental.get_device_details(gpus[0])
    return details.get("device_name") or gpus[0].name


def run() -> dict:
    from benchmarks import suite
    from benchmarks.train_speed import DEFAULT_SIZES

    s = suite.FULL
    out = {"device": gpu_name(), "machine": suite.machine()}
    out.update(suite.bench_sampling(s))
    sizes = json.dumps({k: s[k] for k in DEFAULT_SIZES if k in s})
    for variant in TRAIN_VARIANTS:
        out.update({f"train_{k}_tokens_per_s": v for k, v in suite._child([variant, sizes]).items()})
    return out


def markdown(r: dict) -> str:
    m = r["machine"]
    lines = [
        f"### GPU: {r['device']}",
        "",
        f"`python -m benchmarks.gpu --write-docs`, {m['date']}, "
        + ", ".join(f"{k} {v}" for k, v in m["versions"].items())
        + "; the suite's sizes (2 x LSTM 256, "
        "embedding 64, vocabulary 65, sequence 100, batch 64).",
        "",
        "| figure | value | compared with |",
        "|---|---|---|",
    ]
    for batch in (1, 64):
        lines.append(
            f"| sampling, batch {batch} | {r[f'sampling_b{batch}_tokens_per_s']:,.0f} tokens/s | "
            f"{r[f'sampling_b{batch}_vs_tf_tutorial']:.1f}x TF tutorial's loop; "
            f"{r[f'sampling_b{batch}_fraction_of_tf_peak']:.2f} of TensorFlow's matmul at the step's shapes "
            f"({r[f'tf_peak_b{batch}_gflops']:,.0f} GFLOP/s) |"
        )
    base = r["train_keras_fit_tokens_per_s"]
    for variant, label in (
        ("project", "trainer, float32, cuDNN"),
        ("project_float16", "trainer, mixed float16"),
        ("project_bfloat16", "trainer, mixed bfloat16"),
    ):
        value = r[f"train_{variant}_tokens_per_s"]
        lines.append(f"| {label} | {value:,.0f} tokens/s | {value / base:.2f}x Keras fit ({base:,.0f}) |")
    return "\n".join(lines)


def write_docs(r: dict) -> None:
    page = ROOT / "docs" / "results.md"
    text = page.read_text()
    block = f"{START}\n{markdown(r)}\n{END}"
    if START in text and END in text:
        text = text.split(START, 1)[0] + block + text.split(END, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n## Speed on a GPU\n\n" + block + "\n"
    page.write_text(text)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.gpu", description=__doc__.split("\n")[0])
    p.add_argument(
        "--write-docs", action="store_true", help="Put the figures, with the GPU's name, in docs/results.md."
    )
    p.add_argument("--json", action="store_true", help="Print the figures as one JSON object.")
    args = p.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    quiet_tensorflow()
    name = gpu_name()
    if name is None:
        print(
            "benchmarks.gpu: TensorFlow sees no GPU on this machine (CPU only): nothing measured, skipped.",
            file=sys.stderr,
        )
        return 0
    print(f"benchmarks.gpu: measuring on {name}", file=sys.stderr)
    results = run()
    print(json.dumps(results) if args.json else markdown(results))
    if args.write_docs:
        write_docs(results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
