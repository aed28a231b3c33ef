"""Limits (generator.data.limits): every input, of any size, in bounded time and memory or refused.

Large inputs are built at run time. The commands run in subprocesses under an address-space limit
(``resource.setrlimit(RLIMIT_AS)`` in ``preexec_fn``); those that import TensorFlow are marked slow
(an import costs several seconds), and each kind has a fast case in the default run.
"""

from __future__ import annotations

import json
import os
import resource
import socket
import subprocess
import sys
import threading
import time
from contextlib import closing
from pathlib import Path

import numpy as np
import pytest

from generator.data import limits, midi_io
from generator.data.notes import Note, NoteSequence
from generator.errors import GeneratorError
from tests.conftest import TINY_TEXT, call, one_line_error

GIB = 1 << 30
TUNE_HEAD = "X:1\nT:Long\nM:3/4\nL:1/8\nK:G\n"
BARS = "GAB cde|d2 B2 G2|GAB cde|d2 B2 G2|\n"


def abc_tune(size: int) -> str:
    """One ABC tune of about ``size`` bytes (music21 takes seconds per kilobyte of one long tune)."""
    return TUNE_HEAD + BARS * max(1, (size - len(TUNE_HEAD)) // len(BARS))


def limited(argv: list[str], gib: float, timeout: float = 300, **env) -> subprocess.CompletedProcess:
    """Run ``argv`` with its address space limited to ``gib`` GiB; (exit code, stdout, stderr)."""
    size = int(gib * GIB)

    def limit():
        resource.setrlimit(resource.RLIMIT_AS, (size, size))

    return subprocess.run(
        argv,
        capture_output=True,
        text=True,
        timeout=timeout,
        preexec_fn=limit,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", **env},
    )


def console(name: str) -> list[str]:
    return [sys.executable, "-c", f"from generator.cli.main import {name}; {name}()"]


def stderr_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.strip()]


# -- the limits themselves ----------------------------------------------------------------------------


def test_flags_win_over_the_environment_which_wins_over_the_default(monkeypatch):
    monkeypatch.delenv("GENERATOR_MAX_NOTES", raising=False)
    assert limits.get("notes") == 200_000
    monkeypatch.setenv("GENERATOR_MAX_NOTES", "1_000")
    assert limits.get("notes") == 1000
    limits.override("notes", 5)
    try:
        assert limits.get("notes") == 5 and limits.snapshot()["notes"] == 5
    finally:
        limits.override("notes", None)
    monkeypatch.setenv("GENERATOR_MAX_NOTES", "many")
    with pytest.raises(GeneratorError, match="GENERATOR_MAX_NOTES must be a number"):
        limits.get("notes")


def test_an_exceeded_limit_is_one_line_naming_the_limit_and_how_to_raise_it(monkeypatch):
    monkeypatch.setenv("GENERATOR_MAX_ABC_BYTES", "10")
    message = str(limits.exceeded("abc_bytes", "song.abc", 2_000_000))
    assert message.startswith("song.abc: ") and "2,000,000 bytes" in message and "10 bytes" in message
    assert "GENERATOR_MAX_ABC_BYTES" in message and "\n" not in message
    limits.check("abc_bytes", "song.abc", 10)  # at the limit is fine
    monkeypatch.setenv("GENERATOR_MAX_ABC_BYTES", "0")
    limits.check("abc_bytes", "song.abc", 10**12)  # 0: no limit
    ids, notice = limits.tail(list(range(5000)), limit=100)
    assert ids == list(range(4900, 5000)) and "5,000" in notice and "--prompt-tokens" in notice
    assert limits.tail([1, 2, 3], limit=0) == ([1, 2, 3], None)


# -- music readers -------------------------------------------------------------------------------------


def midi_bytes(notes: int, resolution: int = 480, step: int = 240) -> bytes:
    """A type-0 MIDI file of ``notes`` notes, ``step`` ticks each, written with running status."""
    events = bytearray()
    for i in range(notes):
        pitch = 60 + i % 12
        events += b"\x00" + (b"\x90" if i == 0 else b"") + bytes([pitch, 90]) + _vlq(step) + bytes([pitch, 0])
    events += b"\x00\xff\x2f\x00"
    header = (6).to_bytes(4, "big") + (0).to_bytes(2, "big") + (1).to_bytes(2, "big") + resolution.to_bytes(2, "big")
    return b"MThd" + header + b"MTrk" + len(events).to_bytes(4, "big") + bytes(events)


def _vlq(value: int) -> bytes:
    out = [value & 0x7F]
    value >>= 7
    while value:
        out.append(0x80 | (value & 0x7F))
        value >>= 7
    return bytes(reversed(out))


def test_note_ons_are_counted_from_the_bytes_like_mido_reads_them():
    import music21

    files = sorted((Path(music21.__file__).parent / "midi" / "testPrimitive").glob("*.mid"))
    assert files
    for path in files:
        clean = midi_io._checked_midi_bytes(path.read_bytes(), path.name)
        import mido

        expected = sum(
            1 for t in mido.MidiFile(path, clip=True).tracks for m in t if m.type == "note_on" and m.velocity > 0
        )
        assert midi_io._count_note_ons(clean, 10**9) == expected, path.name
    assert midi_io._count_note_ons(midi_io._checked_midi_bytes(midi_bytes(1000), "x"), 10**9) == 1000


def test_a_midi_file_over_the_notes_limit_is_refused_before_mido_parses_it(tmp_path, monkeypatch):
    import mido

    path = tmp_path / "many.mid"
    path.write_bytes(midi_bytes(3000))
    assert len(midi_io.read_midi(path).notes) == 3000
    monkeypatch.setenv("GENERATOR_MAX_NOTES", "2000")
    monkeypatch.setattr(mido, "MidiFile", lambda *a, **k: pytest.fail("mido parsed a file over the limit"))
    with pytest.raises(GeneratorError, match="GENERATOR_MAX_NOTES") as error:
        midi_io.read_midi(path)
    assert "many.mid" in str(error.value) and "2,000" in str(error.value)
    monkeypatch.delenv("GENERATOR_MAX_NOTES")
    monkeypatch.setenv("GENERATOR_MAX_MIDI_EVENTS", "5000")  # 3,000 notes are 6,001 events
    with pytest.raises(GeneratorError, match="events in a MIDI file is at least [0-9,]+ .*GENERATOR_MAX_MIDI_EVENTS"):
        midi_io.read_midi(path)


def test_a_long_piece_at_a_fine_resolution_is_read_at_a_coarser_one(tmp_path):
    # 1,100 notes of ten quarters at music21's 10,080 ticks per quarter: past MAX_TICK, far from corrupt
    path = tmp_path / "long.mid"
    path.write_bytes(midi_bytes(1_100, resolution=10_080, step=100_800))
    seq = midi_io.read_midi(path)
    assert len(seq.notes) == 1_100
    assert seq.notes[-1].end == pytest.approx(1_100 * 5.0, abs=0.01)  # 120 bpm: five seconds a note


def test_an_mxl_is_measured_unpacked_before_music21_sees_it(tmp_path, monkeypatch):
    import zipfile

    path = tmp_path / "bomb.mxl"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("score.xml", b"<" + b" " * (3 << 20) + b">")
    assert path.stat().st_size < 100_000
    monkeypatch.setenv("GENERATOR_MAX_SCORE_BYTES", str(1 << 20))
    with pytest.raises(GeneratorError, match="unpacked.*GENERATOR_MAX_SCORE_BYTES"):
        midi_io.read_scores(path)


def test_a_multi_megabyte_abc_seed_is_refused_at_once_under_a_memory_limit(tmp_path):
    seed = tmp_path / "huge.abc"
    seed.write_text(abc_tune(3 << 20))
    started = time.monotonic()
    result = limited(console("generate_music") + ["--seed", str(seed), "--output", str(tmp_path / "out.mid")], 2)
    lines = stderr_lines(result.stderr)
    assert result.returncode == 2 and len(lines) == 1, result.stderr
    assert "huge.abc" in lines[0] and "GENERATOR_MAX_ABC_BYTES" in lines[0]
    assert time.monotonic() - started < 60 and not (tmp_path / "out.mid").exists()


def test_a_seed_that_parses_too_long_is_refused_naming_the_time_limit(tmp_path, capsys, monkeypatch):
    from generator.cli.main import generate_music_main

    seed = tmp_path / "slow.abc"
    seed.write_text(abc_tune(40_000))  # music21 needs far more than a second for it
    monkeypatch.setenv("GENERATOR_PARSE_SECONDS", "1")
    started = time.monotonic()
    code, _, err = call(generate_music_main, ["--seed", str(seed), "--output", str(tmp_path / "o.mid")], capsys)
    one_line_error(code, err, "slow.abc", "GENERATOR_PARSE_SECONDS", "1 seconds")
    assert time.monotonic() - started < 60


def pathological_directory(folder: Path) -> Path:
    """Good MIDI and ABC files, one ABC file that stalls music21, one too large and one corrupt."""
    folder.mkdir()
    for i in range(3):
        notes = [Note(60 + i + k % 5, k * 0.25, k * 0.25 + 0.2, 80) for k in range(40)]
        midi_io.write_midi(NoteSequence(notes=notes), folder / f"good{i}.mid")
    (folder / "good.abc").write_text("X:1\nT:Short\nM:3/4\nL:1/8\nK:G\nGAB cde|d2 B2 G2|]\n")
    (folder / "stall.abc").write_text(abc_tune(40_000))
    (folder / "huge.abc").write_text(abc_tune(2 << 20))
    (folder / "broken.mid").write_bytes(b"MThd\x00\x00\x00\x06\x00\x01")
    return folder


def test_a_corpus_directory_skips_the_file_that_stalls_and_counts_the_skipped(tmp_path):
    folder = pathological_directory(tmp_path / "corpus")
    script = (
        "import sys; from generator.data.corpora import open_corpus; "
        "docs = open_corpus(sys.argv[1], 'music').documents(); print(len(docs))"
    )
    started = time.monotonic()
    result = limited([sys.executable, "-c", script, str(folder)], 3, GENERATOR_PARSE_SECONDS="2")
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["4"]
    err = result.stderr
    assert "stall.abc: parsing took longer than the limit of 2 seconds" in err
    assert "huge.abc" in err and "GENERATOR_MAX_ABC_BYTES" in err and "broken.mid" in err
    assert "skipped 3 of 7 files" in err
    assert time.monotonic() - started < 120


@pytest.mark.slow
def test_training_on_the_pathological_directory_skips_and_trains(tmp_path):
    folder = pathological_directory(tmp_path / "corpus")
    out = tmp_path / "run"
    result = limited(
        console("generator")
        + [
            "train",
            "music",
            "--corpus",
            str(folder),
            "--output",
            str(out),
            "--layers",
            "1",
            "--units",
            "16",
            "--embedding",
            "8",
            "--epochs",
            "1",
            "--seq-len",
            "16",
            "--batch-size",
            "4",
        ],
        6,
        GENERATOR_PARSE_SECONDS="5",
    )
    assert result.returncode == 0, result.stderr
    assert "skipped 3 of 7 files" in result.stderr and "stall.abc" in result.stderr
    assert (out / "model.keras").exists()


# -- prompts -------------------------------------------------------------------------------------------


class RecordingDecoder:
    """``forward`` returns row ``table[token]`` and counts tokens in its state; records chunk shapes."""

    def __init__(self, vocab: int = 8):
        import tensorflow as tf

        self.table = tf.constant(np.eye(vocab, dtype=np.float32))
        self.shapes = []

    def zero_states(self, batch):
        import tensorflow as tf

        return (tf.zeros([batch], tf.int32),)

    def forward(self, tokens, states):
        import tensorflow as tf

        self.shapes.append(tuple(tokens.shape))
        return tf.gather(self.table, tokens), (states[0] + tf.shape(tokens)[1],)

    def step(self, tokens, states):
        import tensorflow as tf

        return tf.gather(self.table, tokens), (states[0] + 1,)


@pytest.mark.parametrize("batch", [1, 40])
def test_a_prompt_primes_in_chunks_bounded_by_the_chunk(monkeypatch, batch):
    from generator.generation import sampling

    monkeypatch.setattr(sampling, "PRIME_COLUMNS", 64)
    monkeypatch.setattr(sampling, "PRIME_TOKENS", 400)
    decoder = RecordingDecoder()
    loop = sampling.DecodeLoop(decoder, sampling.get(greedy=True))
    loop._prime = loop._prime_impl  # eagerly, to see every chunk
    row = (np.arange(1000) % 8).astype(np.int32)
    logits, (seen,) = loop.prime(np.broadcast_to(row, (batch, 1000)))
    assert seen.numpy().tolist() == [1000] * batch  # the states went through every chunk
    assert np.argmax(logits.numpy(), axis=-1).tolist() == [row[-1]] * batch
    assert max(w for _, w in decoder.shapes) <= 64 and max(b * w for b, w in decoder.shapes) <= 400


def test_chunked_priming_equals_one_pass(tiny_run, monkeypatch):
    import tensorflow as tf

    from generator import api
    from generator.generation import sampling

    model = api.load(str(tiny_run))
    prompt = np.array([0] + model.encode_prompt(TINY_TEXT[:700]), np.int32)[None, :]
    whole = sampling.DecodeLoop(model.decoder, sampling.get()).prime(prompt)
    monkeypatch.setattr(sampling, "PRIME_COLUMNS", 50)
    chunked = sampling.DecodeLoop(model.decoder, sampling.get()).prime(prompt)
    for a, b in zip(tf.nest.flatten(whole), tf.nest.flatten(chunked)):
        np.testing.assert_allclose(a.numpy(), b.numpy(), atol=1e-5)


def test_a_long_prompt_primes_only_its_end_with_a_notice(tiny_run, capsys):
    from generator import api

    model = api.load(str(tiny_run))
    prompt = (TINY_TEXT * (1_000_000 // len(TINY_TEXT) + 1))[:1_000_000]  # 20 MB: the slow test below
    text = model.generate(prompt, 30, random_seed=3, temperature=0.5)
    assert 1_000_000 < len(text) <= 1_000_030 and text.startswith(prompt[:1000])  # BOS decodes to nothing
    err = capsys.readouterr().err
    assert "1,000,000 tokens" in err and "last 2,048" in err and "--prompt-tokens" in err
    same_end = model.generate(prompt[-2048:], 30, random_seed=3, temperature=0.5)
    assert text[-30:] == same_end[-30:]  # only the last 2,048 characters primed the model


@pytest.mark.slow
def test_generate_text_with_a_20_megabyte_prompt_file_under_a_memory_limit(tmp_path, tiny_run):
    prompt = tmp_path / "prompt.txt"
    prompt.write_text((TINY_TEXT * (20_000_000 // len(TINY_TEXT) + 1))[:20_000_000])
    out = tmp_path / "out.txt"
    for extra in ([], ["--prompt-tokens", "500000"]):  # its end (default), then half a million tokens in chunks
        result = limited(
            console("generate_text")
            + [
                "--checkpoint",
                str(tiny_run),
                "--prompt-file",
                str(prompt),
                "--length",
                "20",
                "--output",
                str(out),
                "--force",
                *extra,
            ],
            4,
        )
        assert result.returncode == 0, result.stderr
        assert 20_000_000 < out.stat().st_size <= 20_000_020  # a sampled BOS decodes to nothing
        assert ("only its last 2,048 prime" in result.stderr) == (not extra)


# -- evaluate ------------------------------------------------------------------------------------------


def test_one_huge_document_is_scored_alone_in_chunks():
    from generator.evaluation import likelihood

    assert likelihood.batches([5, 1_000_000, 6, 7, 4], 32) == [[4, 0, 2, 3], [1]]
    assert likelihood.batches([10] * 5, 2) == [[0, 1], [2, 3], [4]]
    decoder = RecordingDecoder()
    docs = [np.arange(3_000) % 8, np.arange(50) % 8, np.arange(60) % 8]
    likelihood.document_nll(decoder, docs, batch_size=32, chunk=100)  # traced once per shape
    assert max(b * w for b, w in decoder.shapes if b and w) <= 32 * 100


def test_chunked_scores_equal_a_single_pass(tiny_run):
    import tensorflow as tf

    from generator import api
    from generator.evaluation import likelihood

    model = api.load(str(tiny_run))
    docs = [np.array([0] + model.encode_prompt(TINY_TEXT[:n]), np.int32) for n in (200, 90, 100, 20)]
    total, count = likelihood.document_nll(model.decoder, docs, batch_size=3, chunk=32)
    expected = 0.0
    for d in docs:
        logits, _ = model.decoder.forward(tf.constant(d[None, :-1]), model.decoder.zero_states(1))
        expected += float(tf.reduce_sum(tf.nn.sparse_softmax_cross_entropy_with_logits(d[None, 1:], logits)))
    assert count == sum(len(d) - 1 for d in docs)
    assert total == pytest.approx(expected, rel=1e-4)


@pytest.mark.slow
def test_evaluate_one_huge_document_under_a_memory_limit(tmp_path, tiny_run):
    corpus = tmp_path / "huge.txt"
    corpus.write_text((TINY_TEXT * (1_000_000 // len(TINY_TEXT) + 1))[:1_000_000])
    result = limited(
        console("generator") + ["evaluate", "--checkpoint", str(tiny_run), "--corpus", str(corpus), "--json"],
        4,
        timeout=900,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["tokens"] == 1_000_000


# -- text files ------------------------------------------------------------------------------------------


def test_a_text_file_over_the_limit_is_refused_before_it_is_read(tmp_path, capsys, tiny_run, monkeypatch):
    from generator.cli.main import generate_text_main

    prompt = tmp_path / "prompt.txt"
    prompt.write_text("x" * 5000)
    monkeypatch.setenv("GENERATOR_MAX_TEXT_BYTES", "4096")
    code, _, err = call(generate_text_main, ["--checkpoint", str(tiny_run), "--prompt-file", str(prompt)], capsys)
    one_line_error(code, err, "prompt.txt", "5,000 bytes", "GENERATOR_MAX_TEXT_BYTES")


# -- multi-worker peers --------------------------------------------------------------------------------------


def free_port() -> int:
    with closing(socket.socket()) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unreachable_peers_are_named_after_the_timeout():
    from generator.training import distribute

    dead = f"127.0.0.1:{free_port()}"
    with closing(socket.socket()) as alive:
        alive.bind(("127.0.0.1", 0))
        alive.listen(1)
        live = f"127.0.0.1:{alive.getsockname()[1]}"
        started = time.monotonic()
        with pytest.raises(GeneratorError) as error:
            distribute.wait_for_peers(None, [live, dead], timeout=1.0, poll=0.1)
    assert 1.0 <= time.monotonic() - started < 10
    message = str(error.value)
    assert dead in message and live not in message and "--peer-timeout" in message and "\n" not in message


def test_workers_that_start_together_see_each_other():
    from generator.training import distribute

    ports = [f"127.0.0.1:{free_port()}" for _ in range(3)]
    errors, servers, finished = [], [], threading.Event()

    def worker(own):
        try:
            distribute.wait_for_peers(own, [p for p in ports if p != own], timeout=20, poll=0.05)
        except GeneratorError as e:
            errors.append(e)
            return
        server = socket.socket()  # what TensorFlow's server does next: listen on the port
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind(("127.0.0.1", int(own.rsplit(":", 1)[1])))
        server.listen(8)
        servers.append(server)
        finished.wait(30)

    threads = [threading.Thread(target=worker, args=(p,)) for p in ports]
    for k, t in enumerate(threads):
        t.start()
        time.sleep(0.3 * k)  # they need not start at the same moment
    started = time.monotonic()
    while len(servers) + len(errors) < len(ports) and time.monotonic() - started < 30:
        time.sleep(0.05)
    finished.set()
    for t in threads:
        t.join(30)
    for server in servers:
        server.close()
    assert not errors and len(servers) == 3


def test_a_worker_whose_peer_never_comes_exits_2_naming_it(tmp_path, tiny_corpus, capsys, monkeypatch):
    from generator.cli.main import generator_main
    from generator.training import distribute

    cluster = {"worker": [f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"]}
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": cluster, "task": {"type": "worker", "index": 0}}))
    monkeypatch.setattr(distribute, "_multi_worker", None)
    try:
        code, _, err = call(
            generator_main,
            [
                "train",
                "text",
                "--corpus",
                str(tiny_corpus),
                "--output",
                str(tmp_path / "run"),
                "--strategy",
                "multi-worker",
                "--peer-timeout",
                "1",
            ],
            capsys,
        )
    finally:
        limits.override("peer_timeout", None)
    one_line_error(code, err, cluster["worker"][1], "--peer-timeout")
    assert cluster["worker"][0] not in err


@pytest.mark.slow
def test_a_lone_worker_process_exits_2_within_its_peer_timeout(tmp_path, tiny_corpus):
    cluster = {"worker": [f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"]}
    started = time.monotonic()
    result = limited(
        console("generator")
        + [
            "train",
            "text",
            "--corpus",
            str(tiny_corpus),
            "--output",
            str(tmp_path / "run"),
            "--strategy",
            "multi-worker",
        ],
        6,
        timeout=120,
        GENERATOR_PEER_TIMEOUT="3",
        TF_CONFIG=json.dumps({"cluster": cluster, "task": {"type": "worker", "index": 1}}),
    )
    lines = stderr_lines(result.stderr)
    assert result.returncode == 2 and len(lines) == 1, result.stderr
    assert cluster["worker"][0] in lines[0] and "GENERATOR_PEER_TIMEOUT" in lines[0]
    assert time.monotonic() - started < 110


@pytest.mark.parametrize("env, primed", [(None, 2048), ("100", 100), ("0", "all")])
def test_a_music_seed_primes_with_the_prompt_tokens_limit(monkeypatch, env, primed):
    from generator.data.tokenizers.events import EventTokenizer
    from generator.generation.compose import prime_ids

    monkeypatch.delenv("GENERATOR_PROMPT_TOKENS", raising=False)
    if env is not None:
        monkeypatch.setenv("GENERATOR_PROMPT_TOKENS", env)
    tokenizer = EventTokenizer()
    seed = NoteSequence(notes=[Note(60 + i % 12, i * 0.25, i * 0.25 + 0.2) for i in range(2000)])
    encoded = tokenizer.encode(seed)
    assert len(encoded) > 4000
    notices = []
    ids = prime_ids(tokenizer, seed, None, None, notices)
    assert ids == (encoded if primed == "all" else encoded[-primed:])
    assert bool(notices) == (primed != "all")
    assert prime_ids(tokenizer, seed, None, 50) == encoded[-50:]  # an explicit prime_tokens wins over the variable
