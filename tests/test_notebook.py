"""notebooks/sampling.ipynb run headless, the notebook-facing API and the progress bars.

The notebook normally uses the bundled checkpoints; here its first cell is pointed at tiny
untrained run directories through GENERATOR_TEXT_CHECKPOINT / GENERATOR_MUSIC_CHECKPOINT.
"""

import io
import sys

import pytest

from conftest import REPO, TINY_TEXT

NOTEBOOK = REPO / "notebooks" / "sampling.ipynb"


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Untrained text (characters of the tiny corpus) and music (events) run directories."""
    from generator.training.checkpoints import save_run
    from generator.config import RunConfig
    from generator.models import build_model
    from generator.data.tokenizers.chars import CharTokenizer
    from generator.data.tokenizers.events import EventTokenizer

    root = tmp_path_factory.mktemp("runs")
    made = {}
    for name, tokenizer in (("text", CharTokenizer.fit([TINY_TEXT + "ROMEO:"])), ("music", EventTokenizer())):
        config = RunConfig(
            modality=name, tokenizer=tokenizer.kind, layers=1, units=16, embedding=8, vocab_size=tokenizer.vocab_size
        )
        made[name] = save_run(root / name, build_model(config), tokenizer, config)
    return made


def test_notebook_runs_headless_without_errors(runs, tmp_path, monkeypatch):
    import nbclient
    import nbformat

    monkeypatch.setenv("GENERATOR_TEXT_CHECKPOINT", str(runs["text"]))
    monkeypatch.setenv("GENERATOR_MUSIC_CHECKPOINT", str(runs["music"]))
    monkeypatch.setenv("GENERATOR_NOTEBOOK_OUTPUT", str(tmp_path / "out"))
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "3")
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    # allow_errors=False: the first failing cell raises CellExecutionError and fails the test
    nbclient.NotebookClient(
        notebook,
        timeout=300,
        kernel_name="python3",
        allow_errors=False,
        resources={"metadata": {"path": str(tmp_path)}},
    ).execute()
    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    html = "".join(o.get("data", {}).get("text/html", "") for o in outputs)
    assert html.count("data:image/png;base64,") >= 4 and html.count("<audio") >= 4  # piece + 3 temperatures
    assert all(f"temperature {t}" in html for t in (0.5, 1.0, 1.5))
    assert any("image/png" in o.get("data", {}) for o in outputs)  # the rendered PNG
    out = tmp_path / "out"
    for name in (
        "romeo.txt",
        "bach-continuation.mid",
        "bach-continuation.wav",
        "bach-continuation.png",
        "bach-continuation.musicxml",
    ):
        assert (out / name).stat().st_size > 0, name
    assert (out / "romeo.txt").read_text().startswith("ROMEO:")


def test_text_results_are_strings_that_save(runs, tmp_path):
    from generator import api
    from generator.errors import GeneratorError

    model = api.load(runs["text"])
    text = model.generate("ROMEO:", length=40, temperature=0.9, random_seed=3)
    assert isinstance(text, str) and isinstance(text, api.Text) and text.startswith("ROMEO:") and len(text) > 6
    assert text == model.generate("ROMEO:", length=40, temperature=0.9, random_seed=3)
    path = text.save(tmp_path / "romeo.txt")
    assert path.read_text(encoding="utf-8") == text
    with pytest.raises(GeneratorError, match="force"):
        text.save(path)
    other = model.generate("ROMEO:", length=10, random_seed=4)
    other.save(path, force=True)
    assert path.read_text(encoding="utf-8") == other
    with pytest.raises(GeneratorError, match="does not exist"):
        text.save(tmp_path / "missing" / "x.txt")
    several = model.generate("RO", length=5, num_samples=2)
    assert len(several) == 2 and all(isinstance(s, api.Text) for s in several)


class FakeTerminal(io.StringIO):
    def isatty(self):
        return True


def test_tokenizing_and_generating_show_a_progress_bar_on_a_terminal(runs, tiny_corpus, monkeypatch):
    """The bars draw only on a terminal and after MIN_SECONDS (lowered to 0 here)."""
    from generator import api, progress
    from generator.data import corpora
    from generator.data import dataset

    monkeypatch.setattr(progress, "MIN_SECONDS", 0.0)
    terminal = FakeTerminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    source = corpora.open_corpus(str(tiny_corpus), "text")
    dataset.tokenize(source, api.TokenizerFactory("chars"), use_cache=False)
    assert "reading text [" in terminal.getvalue()  # text is streamed into the token store, with bytes per second
    api.load(runs["text"]).generate("ROMEO:", length=64)
    assert "generating [" in terminal.getvalue() and "64/64" in terminal.getvalue()


def test_generate_text_shows_a_bar_for_files_and_several_samples(runs, tmp_path, monkeypatch):
    from generator import progress
    from generator.cli.main import generate_text_main, run

    monkeypatch.setattr(progress, "MIN_SECONDS", 0.0)
    terminal = FakeTerminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    argv = [
        "--checkpoint",
        str(runs["text"]),
        "--prompt",
        "RO",
        "--length",
        "40",
        "--num-samples",
        "2",
        "--output",
        str(tmp_path / "out.txt"),
    ]
    assert run(generate_text_main, argv) == 0
    assert "generating [" in terminal.getvalue() and "40/40" in terminal.getvalue()
    assert (tmp_path / "out-2.txt").read_text(encoding="utf-8").startswith("RO")


def test_bars_stay_silent_when_not_a_terminal_or_quick(monkeypatch):
    from generator import progress

    quiet = io.StringIO()
    with progress.progress_bar(10, "tokenizing", stream=quiet, min_seconds=0) as bar:
        bar.update(10)
    assert quiet.getvalue() == ""
    terminal = FakeTerminal()
    with progress.progress_bar(10, "generating", stream=terminal) as bar:  # finishes within a second
        bar.update(10)
    assert terminal.getvalue() == ""
