"""``generator bench --quick --json`` runs end to end and reports every figure (no timing asserted)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
KEYS = [
    "sampling_b1_tokens_per_s",
    "tf_tutorial_b1_tokens_per_s",
    "sampling_b1_vs_tf_tutorial",
    "window_loop_tokens_per_s",
    "sampling_b1_vs_window_loop",
    "tf_peak_b1_gflops",
    "sampling_b1_fraction_of_tf_peak",
    "sampling_b1_xla_tokens_per_s",
    "sampling_b64_tokens_per_s",
    "tf_tutorial_b64_tokens_per_s",
    "sampling_b64_vs_tf_tutorial",
    "tf_peak_b64_gflops",
    "sampling_b64_fraction_of_tf_peak",
    "band_b1_tokens_per_s",
    "band_b1_fraction_of_tf_peak",
    "band_b64_tokens_per_s",
    "band_b64_fraction_of_tf_peak",
    "train_tokens_per_s",
    "train_vs_keras_fit",
    "train_vs_torch",
    "keras_fit_tokens_per_s",
    "memory_100mb_peak_rss_mb",
    "midi_files_per_s_cold",
    "midi_files_per_s_cached",
]
NONE_IN_QUICK = ["band_continuation_30s_s", "band_continuation_phases_s"]  # timed in full runs only


@pytest.mark.slow  # about two minutes on 2 cores: the whole suite, end to end
def test_quick_bench_reports_every_figure(tmp_path):
    code = "import sys; from generator.cli.main import generator; sys.argv[0] = 'generator'; generator()"
    env = {**os.environ, "PYTHONPATH": str(REPO)}  # the checkout's benchmarks/, whichever generator is installed
    done = subprocess.run(
        [sys.executable, "-c", code, "bench", "--quick", "--json"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=600,
        env=env,
    )
    assert done.returncode == 0, done.stderr
    results = json.loads(done.stdout)
    assert results["quick"] is True and results["machine"]["cores"] >= 1
    for key in KEYS:
        assert key in results, key
        if key == "train_vs_torch" and results["torch_tokens_per_s"] is None:
            continue  # the bench extra (torch) is not installed
        assert results[key] > 0, key
    for key in NONE_IN_QUICK:
        assert key in results, key
    assert results["train_threads"] == results["machine"]["threads"]


def test_table_names_every_baseline(tmp_path):
    from benchmarks import report
    from benchmarks import suite as bench

    r = {k: 1.0 for k in KEYS}
    r.update({k: 1.0 for k in ("tf_peak_b1_gflops", "band_b1_tf_peak_gflops", "band_b64_tf_peak_gflops")})
    r.update(
        quick=True,
        sizes=bench.QUICK,
        torch_tokens_per_s=None,
        train_vs_torch=None,
        keras_fit_xla_tokens_per_s=2.0,
        train_no_xla_tokens_per_s=3.0,
        midi_files_per_s_music21=0.5,
        midi_cold_vs_music21=2.0,
        train_threads=2,
        band_continuation_30s_s=None,
        band_continuation_phases_s=None,
        load_average_sampling=0.5,
        machine={"cpu": "cpu", "cores": 2, "date": "today", "load_average": 0.0, "versions": {}},
    )
    text = bench.table(r)
    for words in (
        "TF tutorial's one-step loop",
        "predict on a 100-token window",
        "matmul at the step's shapes",
        "Keras fit",
        "PyTorch nn.LSTM, 2 threads",
        "music21",
        "--no-jit",
        "generate-music",
        "sampling 0.5",
    ):
        assert words in text, words
    assert "numpy" not in text
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "benchmarks.md").write_text(f"a\n{report.DOCS_START}\nSTALE\n{report.DOCS_END}\nb\n")
    label = next(iter(report.README_ROWS))
    (tmp_path / "README.md").write_text(f"| x | y | z |\n| {label} | old | [benchmarks](docs/benchmarks.md) |\n")
    r["train_vs_torch"], r["torch_tokens_per_s"] = 1.5, 2.0
    report.write_docs(r, tmp_path)
    page = (tmp_path / "docs" / "benchmarks.md").read_text()
    assert "STALE" not in page and "| figure | project |" in page and page.endswith("b\n")
    assert f"| {label} | 1.50x (1 vs 2 tokens/s) | [benchmarks]" in (tmp_path / "README.md").read_text()


def test_gpu_script_skips_without_a_gpu_and_writes_its_section(tmp_path, capsys, monkeypatch):
    from benchmarks import gpu

    if gpu.gpu_name() is None:
        assert gpu.main([]) == 0
        assert "no GPU" in capsys.readouterr().err
    r = {
        "device": "Test GPU",
        "machine": {"date": "today", "versions": {"tensorflow": "x"}},
        "train_keras_fit_tokens_per_s": 100.0,
        "train_project_tokens_per_s": 200.0,
        "train_project_float16_tokens_per_s": 300.0,
        "train_project_bfloat16_tokens_per_s": 250.0,
    }
    for b in (1, 64):
        r.update(
            {
                f"sampling_b{b}_tokens_per_s": 10.0,
                f"sampling_b{b}_vs_tf_tutorial": 2.0,
                f"sampling_b{b}_fraction_of_tf_peak": 0.5,
                f"tf_peak_b{b}_gflops": 9.0,
            }
        )
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "results.md").write_text("# Results\n")
    monkeypatch.setattr(gpu, "ROOT", tmp_path)
    gpu.write_docs(r)
    gpu.write_docs(r)  # a second run replaces the section
    page = (tmp_path / "docs" / "results.md").read_text()
    assert page.count("### GPU: Test GPU") == 1 and "3.00x Keras fit" in page


def test_band_split_knows_the_files_whose_chunks_overrun(tmp_path):
    import struct

    from benchmarks.band_split import chunks_overrun, main

    header = b"MThd" + struct.pack(">LHHH", 6, 1, 1, 96)
    track = b"MTrk" + struct.pack(">L", 4) + b"\x00\xff\x2f\x00"
    assert not chunks_overrun(header + track)
    assert chunks_overrun(header + track + b"MTrk" + struct.pack(">L", 100) + b"\x00")  # junk after the declared track
    songs = tmp_path / "songs" / "pop"
    songs.mkdir(parents=True)
    for i in range(205):
        (songs / f"{i}.mid").write_bytes(header + track)
    assert main([str(tmp_path / "songs"), str(tmp_path / "out")]) == 0
    assert len(list((tmp_path / "out" / "band-test").rglob("*.mid"))) == 200
    assert len(list((tmp_path / "out" / "band-train-model").rglob("*.mid"))) == 5


def test_longest_copied_run_matches_a_brute_force_search():
    import numpy as np

    from benchmarks.band_songs import longest_copied_run

    rng = np.random.default_rng(3)
    corpus = rng.integers(0, 6, 3000)
    sequences = [rng.integers(0, 6, 40) for _ in range(4)] + [corpus[100:160].copy(), corpus[-9:].copy()]
    sequences[1][5:25] = corpus[700:720]

    def brute(seq):
        runs = {
            tuple(corpus[i : i + n])
            for n in range(1, len(seq) + 1)
            for i in range(len(corpus) - n + 1)
            if n <= 25 or n in (60, 9)
        }
        return max(
            (n for n in range(1, len(seq) + 1) for i in range(len(seq) - n + 1) if tuple(seq[i : i + n]) in runs),
            default=0,
        )

    assert longest_copied_run(sequences, corpus) == [brute(s) for s in sequences]
