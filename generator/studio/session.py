"""What one studio session holds and does: its seeds, its takes, its models and its jobs.

Every file a request leads to lies in the session's working folder, under a name the server
made (``seeds/<id>.<suffix>``, ``takes/<id>/take.mid``); a request names things by those ids
or by a checkpoint name from the catalogue, never by a path. The work itself goes through the
library's public API: ``generator.load``, ``compose``, ``Generator.harmonize`` and
``Generator.stream``, ``choose_checkpoint`` for the model a seed asks for, ``render`` for audio.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path

from generator.errors import ArgumentError, GeneratorError
from generator.studio.jobs import Cancelled, Job, Worker

UPLOAD_BYTES = 4 * 1024 * 1024  # the largest seed file accepted (MIDI files of whole songs are ~100 KB)
MAX_SECONDS = 300.0  # the longest continuation the page asks for
MAX_TEXT_LENGTH = 20_000  # characters of text per request
MAX_PROMPT = 20_000  # characters of prompt
SEED_SHOWN = 20.0  # seconds of the seed the piano roll of a take shows before the continuation
ID = re.compile(r"[0-9a-f]{12}|example-[a-z]+")
DESCRIPTIONS = {
    "pop-piano": "piano songs, melody over accompaniment",
    "band": "multi-track songs: drums, bass, guitars, keys, lead",
    "bach": "Bach chorales as one stream of notes",
    "jsb-chorales": "four-voice chorales on a 16th-note grid",
    "harmonizer": "writes alto, tenor and bass under a melody",
    "shakespeare": "text in the style of Shakespeare",
    "shakespeare-attention": "Shakespeare, LSTM with attention",
}


@dataclass
class Seed:
    id: str
    name: str  # shown in the page: the uploaded file's own name, or the example's
    path: Path
    parsed: object = None  # its NoteSequence, read on first use

    @property
    def sequence(self):
        """The seed's NoteSequence (read once, through the library's hardened readers)."""
        if self.parsed is None:
            from generator.generation.compose import read_seed

            sequence = read_seed(self.path)
            if not sequence.notes:
                raise GeneratorError(f"{self.name} has no notes to continue")
            self.parsed = sequence
        return self.parsed


@dataclass
class Take:
    id: str
    number: int
    kind: str  # continue, harmonize or rewrite
    checkpoint: str
    settings: dict  # what made it: the request, with the random seed drawn
    seed_name: str
    folder: Path
    roll: dict = field(default_factory=dict)
    notices: list[str] = field(default_factory=list)
    audio: str = ""  # which synthesizer made take.wav

    def summary(self) -> dict:
        s = self.settings
        return dict(
            id=self.id,
            number=self.number,
            kind=self.kind,
            checkpoint=self.checkpoint,
            seed=self.seed_name,
            settings=s,
            notices=self.notices,
            audio=self.audio,
            duration=self.roll.get("duration", 0.0),
            midi=f"/api/takes/{self.id}/take.mid",
            wav=f"/api/takes/{self.id}/take.wav" if (self.folder / "take.wav").is_file() else None,
        )


def catalogue(extra_runs=()) -> dict[str, dict]:
    """``{name: {path, modality, arch, kind, description}}``: the bundled checkpoints and ``extra_runs``
    (run directories, named by their folder), read from their config.json only."""
    from generator import models
    from generator.training import checkpoints

    out = {}
    for name in checkpoints.bundled_names():
        out[name] = dict(path=checkpoints.bundled_dir() / name)
    for run in extra_runs:
        path = Path(run).expanduser().resolve()
        if not (path / "config.json").is_file():
            raise ArgumentError("extra_runs", f"{run}: not a run directory (it has no config.json)")
        out[path.name] = dict(path=path)
    for name, entry in out.items():
        config = checkpoints.read_config(entry["path"])
        entry.update(
            modality=config.modality,
            arch=config.arch,
            kind=models.task(config.arch).kind(config.modality),  # music, text or harmonizer
            description=DESCRIPTIONS.get(
                name, f"{config.arch} {config.layers}x{config.units}, {config.tokenizer} tokens"
            ),
        )
    return out


def roll(sequence, given) -> dict:
    """The piano roll the page draws: tracks and notes ``[pitch, start, end, track, velocity,
    generated]``, where ``given(note)`` is True for the notes that came from the seed."""
    tracks = []
    for index, inst in enumerate(sequence.instruments):
        name = inst.name.strip() if inst.name.strip() else ("drums" if inst.is_drum else f"track {index + 1}")
        tracks.append(dict(name=name, program=inst.program, drum=inst.is_drum, role=inst.role))
    notes = [
        [n.pitch, round(n.start, 4), round(n.end, 4), n.track, n.velocity, 0 if given(n) else 1] for n in sequence.notes
    ]
    end = round(max((n.end for n in sequence.notes), default=0.0), 4)
    return dict(tracks=tracks, notes=notes, duration=end, view=[0.0, end], marks=[])


def render_wav(job: Job, midi: Path) -> str:
    """Write ``take.wav`` beside ``midi`` with ``generator render`` (``generation.render``: FluidSynth
    when installed, else sine waves) in a child process, which a cancel kills; returns which
    synthesizer made it, or why there is no audio."""
    import generator

    env = dict(
        os.environ,
        PYTHONPATH=os.pathsep.join(
            [str(Path(generator.__file__).resolve().parents[1])] + [p for p in [os.environ.get("PYTHONPATH")] if p]
        ),
    )
    command = [
        sys.executable,
        "-c",
        "from generator.cli.main import generator; generator()",
        "render",
        str(midi),
        "--formats",
        "wav",
        "--force",
    ]
    if job.cancel.is_set():  # cancelled before it began: a short render could finish before the first check
        raise Cancelled
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    while True:
        try:
            out, err = process.communicate(timeout=0.2)
            break
        except subprocess.TimeoutExpired:
            if job.cancel.is_set():
                process.kill()
                process.communicate()
                raise Cancelled from None
    if process.returncode != 0:
        return "no audio: " + ((err.strip().splitlines() or ["the renderer failed"])[-1].removeprefix("error: "))
    line = out.strip().splitlines()[-1] if out.strip() else ""
    return line.split(" (", 1)[-1][:-1] if " (" in line else line  # "wrote take.wav (how)": the how


class Studio:
    """One session: a working folder, the models it may load, its seeds, takes and job queue."""

    def __init__(self, workdir: Path, extra_runs=(), log=None):
        from generator.studio import examples

        self.workdir = Path(workdir).resolve()
        for sub in ("seeds", "takes", "examples"):
            (self.workdir / sub).mkdir(parents=True, exist_ok=True)
        self.models = catalogue(extra_runs)
        self.loaded: dict[str, object] = {}  # name -> Generator, loaded by the worker thread only
        self.seeds: dict[str, Seed] = {}
        self.takes: dict[str, Take] = {}
        self.lock = threading.Lock()
        self.worker = Worker(log=log)
        self.examples = []
        for example in examples.install(self.workdir / "examples"):  # read when first chosen
            seed = self.add_seed(example["path"], example["name"], seed_id=f"example-{example['id']}", lazy=True)
            self.examples.append(dict(id=seed.id, name=example["name"], description=example["description"]))

    # -- files ---------------------------------------------------------------------------------------
    def inside(self, path: Path) -> Path:
        """``path`` resolved, which must lie in the working folder (every file a request reaches)."""
        path = Path(path).resolve()
        if not path.is_relative_to(self.workdir):
            raise GeneratorError("that file is outside the studio's working folder")
        return path

    def add_seed(self, path: Path, name: str, seed_id: str | None = None, lazy: bool = False) -> Seed:
        """Register the seed file ``path``; it is read now (a bad file fails here) unless ``lazy``."""
        seed = Seed(seed_id or secrets.token_hex(6), name, self.inside(path))
        if not lazy:
            seed.sequence  # noqa: B018  (reads and checks it)
        with self.lock:
            self.seeds[seed.id] = seed
        return seed

    def upload(self, data: bytes, filename: str) -> Seed:
        """Keep an uploaded seed file under a name of the server's own and read it."""
        from generator.data.midi_io import MUSIC_SUFFIXES

        name = Path(str(filename).replace("\\", "/")).name[:120] or "upload"
        suffix = Path(name).suffix.lower()
        if suffix not in MUSIC_SUFFIXES:
            raise GeneratorError(
                f"{name} is not a score file: upload a MIDI file (.mid, .midi) or one of "
                f"{', '.join(MUSIC_SUFFIXES[2:])}"
            )
        if not data:
            raise GeneratorError(f"{name} is empty")
        if len(data) > UPLOAD_BYTES:
            raise GeneratorError(f"{name} is larger than the {UPLOAD_BYTES // (1024 * 1024)} MiB upload limit")
        seed_id = secrets.token_hex(6)
        path = self.inside(self.workdir / "seeds" / f"{seed_id}{suffix}")
        path.write_bytes(data)
        try:
            return self.add_seed(path, name, seed_id)
        except GeneratorError as e:
            path.unlink(missing_ok=True)
            raise GeneratorError(f"{name} could not be read as music: {e}") from None

    def seed_from_take(self, take: Take) -> Seed:
        """The take's MIDI file as a new seed, to continue it further."""
        return self.add_seed(take.folder / "take.mid", f"take-{take.number}.mid")

    def seed(self, seed_id: str | None) -> Seed | None:
        if seed_id in (None, ""):
            return None
        found = self.seeds.get(seed_id) if ID.fullmatch(str(seed_id)) else None
        if found is None:
            raise GeneratorError(f"no seed {str(seed_id)[:40]!r} in this session; upload it again")
        return found

    def take(self, take_id: str) -> Take:
        found = self.takes.get(take_id) if ID.fullmatch(str(take_id)) else None
        if found is None:
            raise GeneratorError(f"no take {str(take_id)[:40]!r} in this session")
        return found

    def seed_info(self, seed: Seed) -> dict:
        from generator.data.score import roles_summary
        from generator.generation.choose import choose_checkpoint

        model, reason = choose_checkpoint(seed.sequence)
        return dict(
            id=seed.id,
            name=seed.name,
            tracks=roles_summary(seed.sequence),
            model=model,
            reason=reason,
            roll=roll(seed.sequence, lambda n: True),
        )

    # -- models --------------------------------------------------------------------------------------
    def model(self, name: str, kind: str, job: Job | None = None):
        """The loaded ``Generator`` for catalogue entry ``name``, which must be of ``kind`` (music, text
        or harmonizer: ``catalogue``)."""
        entry = self.models.get(name)
        if entry is None:
            raise GeneratorError(f"no model named {str(name)[:40]!r}; choose one of {', '.join(self.models)}")
        if entry["kind"] != kind:
            raise GeneratorError(f"{name} is a {entry['kind']} model, not a {kind} model")
        if name not in self.loaded:
            if job is not None:
                job.stage = f"loading {name}"
            from generator import api

            self.loaded[name] = api.load(entry["path"])
        return self.loaded[name]

    # -- jobs ----------------------------------------------------------------------------------------
    def submit(self, kind: str, settings: dict) -> Job:
        """Queue a music, harmonize or text job; ``settings`` as the page sent them."""
        settings = dict(settings)
        if settings.get("random_seed") is None:
            settings["random_seed"] = secrets.randbelow(2**31)  # drawn here so that the take can say it
        if kind in ("music", "harmonize"):
            self.seed(settings.get("seed"))  # an unknown seed fails now, in the page, not in the queue
        run = {"music": self.run_music, "harmonize": self.run_harmonize, "text": self.run_text}[kind]
        return self.worker.submit(Job(kind, run, settings))

    def run_music(self, job: Job) -> None:
        from generator.generation.choose import choose_checkpoint
        from generator.generation.compose import compose

        s = job.settings
        seed = self.seed(s.get("seed"))
        name = s.get("model") or "auto"
        if name == "auto":
            name = choose_checkpoint(seed.sequence)[0] if seed is not None else "pop-piano"
        model = self.model(name, "music", job)
        job.stage, job.progress = f"generating {s['seconds']:g} s with {name}", 0.0
        notices: list[str] = []
        options = model.options(temperature=s["temperature"], top_p=s.get("top_p"), random_seed=s["random_seed"])
        music = compose(
            model,
            seed.sequence if seed is not None else None,
            seconds=s["seconds"],
            options=options,
            log=notices.append,
        )[0]
        start = music.continuation_start
        self.keep(job, music, "continue", name, seed, notices, lambda n: n.start < start - 1e-9)

    def run_harmonize(self, job: Job) -> None:
        s = job.settings
        seed = self.seed(s.get("seed"))
        if seed is None:
            raise GeneratorError("choose a melody (or a four-part piece) to harmonize first")
        model = self.model("harmonizer", "harmonizer", job)
        infill = None
        if s.get("mode") == "rewrite":
            infill = (float(s["start_beat"]), float(s["end_beat"]))
        job.stage, job.progress = "harmonizing" if infill is None else "rewriting the passage", 0.0
        notices: list[str] = []
        music = model.harmonize(
            seed.sequence,
            infill=infill,
            temperature=s["temperature"],
            random_seed=s["random_seed"],
            iterations=s.get("iterations") or None,
        )
        notices.extend(music.notices)
        if infill is None:
            self.keep(job, music, "harmonize", "harmonizer", seed, notices, lambda n: n.track == 0)  # the melody
            return
        bpm = music.sequence.tempos[0][1] if music.sequence.tempos else 120.0
        low, high = (b * 60.0 / bpm for b in infill)
        self.keep(
            job,
            music,
            "rewrite",
            "harmonizer",
            seed,
            notices,
            lambda n: not (low - 1e-6 <= n.start < high - 1e-6),
            marks=[[round(low, 4), round(high, 4)]],
        )

    def keep(self, job: Job, music, kind: str, checkpoint: str, seed, notices, given, marks=None) -> None:
        """Save ``music`` as a new take (MIDI, then WAV) and attach it to ``job``."""
        job.check()
        take_id = secrets.token_hex(6)
        folder = self.inside(self.workdir / "takes" / take_id)
        folder.mkdir()
        music.save(folder / "take.mid")
        job.stage, job.progress = "rendering audio", None
        try:
            audio = render_wav(job, folder / "take.mid")
        except Cancelled:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        with self.lock:
            take = Take(
                take_id,
                len(self.takes) + 1,
                kind,
                checkpoint,
                dict(job.settings),
                seed.name if seed is not None else "(none)",
                folder,
                roll(music.sequence, given),
                list(notices),
                audio,
            )
            start = music.continuation_start
            if kind == "continue" and start > 0:  # show the seed's last SEED_SHOWN seconds, then the new music
                shown = max(0.0, start - SEED_SHOWN)
                take.roll["view"] = [round(shown, 4), take.roll["duration"]]
                take.roll["notes"] = [n for n in take.roll["notes"] if n[2] > shown]
            take.roll["marks"] = [[round(start, 4), take.roll["duration"]]] if kind == "continue" else (marks or [])
            self.takes[take_id] = take
        job.take = take_id

    def run_text(self, job: Job) -> None:
        s = job.settings
        model = self.model(s["checkpoint"], "text", job)
        ids = model.encode_prompt(s["prompt"])
        notices: list[str] = []
        ids = model.prompt_tail(ids, log=notices.append)
        job.stage, job.progress, job.text = "generating", 0.0, s["prompt"]
        done = 0
        for chunk in model.stream(
            ids, s["length"], temperature=s["temperature"], top_p=s.get("top_p"), random_seed=s["random_seed"]
        ):
            job.text += model.tokenizer.decode(chunk[0])
            done += chunk.shape[1]
            job.progress = done / s["length"]
            job.check()
