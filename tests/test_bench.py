"""``generator bench --quick --json`` runs end to end and reports every figure (no timing asserted)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
KEYS = ["sampling_b1_speedup", "sampling_b64_tokens_per_s", "sampling_b64_fraction_of_peak", "train_tokens_per_s",
        "train_vs_keras_fit", "train_vs_torch", "memory_100mb_peak_rss_mb", "midi_files_per_s_cold",
        "midi_files_per_s_cached", "window_loop_tokens_per_s", "keras_fit_tokens_per_s", "gemm_peak_gflops",
        "sampling_b1_tokens_per_s", "tf_gemm_peak_gflops", "sampling_b64_fraction_of_tf_peak"]


@pytest.mark.slow  # about two minutes on 2 cores: the whole suite, end to end
def test_quick_bench_reports_every_figure(tmp_path):
    code = "import sys; from generator.cli.main import generator; sys.argv[0] = 'generator'; generator()"
    env = {**os.environ, "PYTHONPATH": str(REPO)}  # the checkout's benchmarks/, whichever generator is installed
    done = subprocess.run([sys.executable, "-c", code, "bench", "--quick", "--json"], capture_output=True, text=True,
                          cwd=tmp_path, timeout=600, env=env)
    assert done.returncode == 0, done.stderr
    results = json.loads(done.stdout)
    assert results["quick"] is True and results["machine"]["cores"] >= 1
    for key in KEYS:
        assert key in results, key
        if key == "train_vs_torch" and results["torch_tokens_per_s"] is None:
            continue  # the bench extra (torch) is not installed
        assert results[key] > 0, key


def test_table_names_every_baseline():
    from benchmarks import suite as bench

    r = {k: 1.0 for k in KEYS}
    r.update(quick=True, sizes=bench.QUICK, torch_tokens_per_s=None, train_vs_torch=None, keras_fit_xla_tokens_per_s=2.0,
             train_no_xla_tokens_per_s=3.0, midi_files_per_s_music21=0.5, midi_cold_vs_music21=2.0,
             machine={"cpu": "cpu", "cores": 2, "date": "today", "load_average": 0.0, "versions": {}})
    text = bench.table(r)
    for words in ("predict on a 100-token window", "GEMM peak", "Keras fit", "PyTorch", "music21", "--no-jit"):
        assert words in text
