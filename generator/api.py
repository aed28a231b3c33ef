"""The Python API, used by notebooks and by the command line alike.

>>> import generator
>>> shakespeare = generator.load("shakespeare")
>>> print(shakespeare.generate("ROMEO:", length=200, temperature=0.8, random_seed=1))
"""

from __future__ import annotations

import dataclasses
import json
import os
import secrets
import sys
from pathlib import Path

import numpy as np

from generator.training import checkpoints
from generator.config import FORMAT_VERSION, RunConfig, SamplingOptions, renamed
from generator.config import preset as config_preset
from generator.options import check_names
from generator.data.dataset import TokenizerFactory  # noqa: F401  (re-exported)
from generator.errors import ArgumentError, GeneratorError
from generator.data.tokenizers.base import BOS

MAX_LENGTH = 1_000_000


def train(
    corpus: str,
    output: str | os.PathLike,
    *,
    modality: str = "text",
    preset: str | None = None,
    force: bool = False,
    encoding: str = "utf-8",
    log=print,
    progress: bool = True,
    config: RunConfig | str | os.PathLike | None = None,
    **settings,
) -> dict:
    """Train (or resume) a model on ``corpus`` into the run directory ``output``; returns its metrics.

    ``settings`` are ``RunConfig`` fields (layers, units, epochs, ...); they override ``config``,
    a RunConfig or JSON file (such as ``best_config.json`` from ``generator tune``), which
    replaces the preset::

        >>> generator.train("austen", "runs/austen", epochs=5, units=256)
        >>> generator.train("austen", "runs/tuned", config="tuning/best_config.json", epochs=30)
        >>> generator.train("letters.txt", "runs/letters", init_from="shakespeare", time_limit=300)

    ``init_from`` fine-tunes a checkpoint (see ``generator.training.finetune``): its tokenizer,
    architecture and sizes are taken, and settings that contradict them are a GeneratorError.
    """
    from generator.data import corpora
    from generator.training.trainer import Trainer

    settings = renamed(settings)  # seed= is the old name of random_seed
    check_names(RunConfig, settings)  # an ArgumentError names an unknown setting
    if config is not None:
        config_name = str(config) if not isinstance(config, RunConfig) else "the configuration"
        config = load_config(config, modality)
    init_from = settings.get("init_from") or (config.init_from if config is not None else "")
    is_json = str(corpus).lower().endswith(".json")
    if (
        preset is None
        and modality == "music"
        and (is_json or str(corpus) == "chorales" or settings.get("tokenizer") == "voices")
    ):
        preset = "chorales"  # SATB grids: the voices tokenizer and its hyperparameters
    if is_json:
        settings.setdefault("split", "train")
        if settings["split"] == "train":
            settings.setdefault("val_split", "valid")  # validate on the corpus's own valid split
    source_run = None
    if init_from:
        from generator.training import finetune

        source_run = finetune.load_source(init_from)
        base = finetune.fine_tune_config(
            source_run, init_from, modality, settings, config, config_name if config is not None else "config"
        )
        settings = {k: v for k, v in settings.items() if k != "init_from"}
    else:
        base = config if config is not None else config_preset(preset or modality, settings.get("arch") or "lstm")
    config = base.replace(corpus=str(corpus), modality=modality, **settings).check()  # ArgumentError if one misfits
    check_fine_tuning(config)
    source = corpora.open_corpus(
        str(corpus), modality, split=config.split, encoding=encoding, documents=config.documents, column=config.column
    )
    if source_run is not None:
        factory = finetune.tokenizer_factory(source_run)
    else:
        factory = TokenizerFactory(config.tokenizer, config.extra.get("tokenizer_options"))
    val_source = (
        corpora.open_corpus(str(corpus), modality, split=config.val_split, encoding=encoding)
        if config.val_split
        else None
    )
    return Trainer(config, Path(output), log=log, progress=progress).train(
        source, factory, force=force, val_corpus=val_source
    )


def check_fine_tuning(config: RunConfig) -> None:
    """The fine-tuning settings that need each other or a size: a GeneratorError naming the problem."""
    if config.freeze and not config.init_from:
        raise ArgumentError("freeze", "keeps layers at their init_from weights: give init_from too", "init_from")
    if config.freeze >= config.layers:
        raise ArgumentError(
            "freeze",
            f"{config.freeze} would freeze every one of the {config.layers} layers; freeze fewer than {config.layers}",
        )
    if (config.documents != "files" or config.column) and config.modality != "text":
        raise ArgumentError("documents", "lines and column are for text corpora", "column")


def load_config(source: RunConfig | str | os.PathLike, modality: str | None = None) -> RunConfig:
    """A ``RunConfig`` from a JSON file (``best_config.json``, a run's ``config.json``), checked.

    Unknown keys, values of the wrong type, another format version or (when given) another
    ``modality`` are a GeneratorError naming the file.
    """
    if isinstance(source, RunConfig):
        config, name = source, "the configuration"
    else:
        path, name = Path(source), str(source)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise GeneratorError(f"configuration file {path} not found") from None
        except (OSError, ValueError) as e:
            raise GeneratorError(f"{path} is not a JSON configuration file: {e}") from None
        if not isinstance(data, dict):
            raise GeneratorError(f"{path} must hold a JSON object of RunConfig fields")
        try:
            config = RunConfig.from_dict(data).check()
        except (TypeError, ValueError) as e:
            raise GeneratorError(f"{path}: {e}") from None
    if config.format_version != FORMAT_VERSION:
        raise GeneratorError(
            f"{name} is configuration format {config.format_version}; this version reads {FORMAT_VERSION}"
        )
    if modality is not None and config.modality != modality:
        raise ArgumentError(
            "config",
            f"{name} configures a {config.modality} model, not {modality}: train it with modality {config.modality}",
            "modality",
        )
    return config


def load(name_or_path: str | os.PathLike = "shakespeare", *, key_average: int | None = None) -> "Generator":
    """Load a bundled checkpoint by name or a run directory by path.

        >>> bach = generator.load("bach")
        >>> bach.generate(seed="song.mid", temperature=0.9, seconds=20)   # a Music object
        >>> generator.load("runs/austen").generate("It is a truth", length=300)   # a Text (a str)

    ``key_average`` (music): average each prediction over the music transposed by up to that many
    semitones either way (see ``Generator.key_average``).
    """
    return Generator(checkpoints.load_run(name_or_path), key_average=key_average)


class Text(str):
    """Generated text: an ordinary ``str`` that can also ``save`` itself.

    >>> sample = generator.load("shakespeare").generate("ROMEO:", length=200)
    >>> sample.startswith("ROMEO:")
    True
    >>> sample.save("romeo.txt")        # an existing file is kept unless force=True
    PosixPath('romeo.txt')
    """

    def save(self, path: str | os.PathLike, force: bool = False) -> Path:
        """Write the text as UTF-8, atomically; refuse to overwrite an existing file unless ``force``."""
        path = Path(path)
        if path.is_dir():
            raise GeneratorError(f"{path} is a directory")
        if path.exists() and not force:
            raise GeneratorError(f"{path} already exists; pass force=True to overwrite it")
        if not path.parent.is_dir():
            raise GeneratorError(f"cannot write {path}: folder {path.parent} does not exist")
        checkpoints.atomic_write_text(path, str(self))
        return path


class Stream:
    """The chunks ``[num_samples, n]`` of new token ids of one ``Generator.stream`` call, as an iterator.

    ``constraint_state`` is the tokenizer's constraint state after the last token drawn (music
    tokenizers that keep the output well-formed; None for the others); ``options`` the sampling
    options the call used (recommendations filled in) and ``loop`` its compiled decode loop.
    """

    def __init__(self, chunks, constraint, options: SamplingOptions, loop):
        self._chunks, self._constraint, self.options, self.loop = chunks, constraint, options, loop

    def __iter__(self):
        return self

    def __next__(self) -> np.ndarray:
        return next(self._chunks)

    @property
    def constraint_state(self):
        return None if self._constraint is None else self._constraint.state


class Generator:
    """A trained model with its tokenizer: sample from it, or score a corpus with it.

    It holds no sampling state: each call takes its ``SamplingOptions`` (or their fields as
    keywords) and returns what it made. ``key_average`` given to ``load`` is the default of the
    calls that leave it out."""

    def __init__(self, run: checkpoints.Run, key_average: int | None = None):
        self.run = run
        self.tokenizer = run.tokenizer
        self.config: RunConfig = run.config
        self._key_average = self._resolve_key_average(key_average)  # checked once, here
        self._decoders = {}  # key_average -> decoder
        self._loops = {}  # (key_average, temperature, top_k, top_p, repetition) -> DecodeLoop, latest used last

    def __repr__(self) -> str:
        loss = self.run.metrics.get("val_loss_nats")
        extra = f", validation {loss:.3f} nats/token" if isinstance(loss, float) else ""
        return f"Generator({self.run.path.name}: {self.config.modality}, {self.config.arch} {self.config.layers}x{self.config.units}{extra})"

    def top_p(self, top_p: float | None = None) -> float | None:
        """The nucleus to sample with: ``top_p`` when given (1.0: every token, no nucleus), else the
        one the checkpoint recommends (``"top_p"`` in its config's ``extra``; pop-piano: 0.9), else
        None (every token)."""
        if top_p is None:
            top_p = self.config.extra.get("top_p")
        return None if top_p is None or top_p == 1 else top_p

    @property
    def key_average(self) -> int:
        """The key averaging of calls that give none (read only): ``load``'s ``key_average``, else the
        checkpoint's recommendation (``"key_average"`` in its config's ``extra``; the bundled music
        models: 3), else 0. Every prediction is then the average of the model's predictions for the
        music moved -K..+K semitones (``generator.models.key_average``)."""
        return self._key_average

    def _resolve_key_average(self, semitones: int | None) -> int:
        if semitones is None:
            semitones = self.config.extra.get("key_average", 0)
        SamplingOptions().replace(key_average=int(semitones) if isinstance(semitones, np.integer) else semitones)
        if semitones and (self.tokenizer.transposition(0) is None or not self.decodes_left_to_right):
            raise ArgumentError(
                "key_average",
                f"needs a left-to-right music model; {self.run.path.name} is a "
                f"{self.config.modality} model ({self.config.arch}, {self.tokenizer.kind} tokens)",
            )
        return int(semitones)

    @property
    def task(self):
        """What the model does (``generator.models.tasks``): a language model, sampled by ``generate``
        and ``stream``, or the harmonizer, sampled by ``harmonize``."""
        from generator import models

        return models.task(self.config.arch)

    @property
    def decodes_left_to_right(self) -> bool:
        """Whether the model predicts each token from the ones before it (its task's ``left_to_right``)."""
        return self.task.left_to_right

    def options(self, options: SamplingOptions | None = None, **changes) -> SamplingOptions:
        """``options`` (default: ``SamplingOptions()``) with ``changes``, checked, and the checkpoint's
        recommendations filled in where they are None (``top_p``, ``key_average``, ``repetition``).
        Filling in twice changes nothing, so a call may hand its options on to another."""
        options = (options or SamplingOptions()).replace(**changes)
        top_p = self.config.extra.get("top_p") if options.top_p is None else options.top_p
        repetition = self.config.extra.get("repetition", 0.0) if options.repetition is None else options.repetition
        return dataclasses.replace(
            options,
            top_p=top_p,
            repetition=float(repetition),
            key_average=self._key_average
            if options.key_average is None
            else self._resolve_key_average(options.key_average),
        )

    def decoder_for(self, key_average: int = 0):
        """The incremental decoder sampling and scoring use, key-averaged over -K..K semitones when K > 0."""
        if key_average not in self._decoders:
            from generator.models import decoder as make_decoder

            plain = self._decoders.get(0) or make_decoder(self.run.model, self.run.path.name, self.config.modality)
            self._decoders[0] = plain
            if key_average:
                from generator.models.key_average import KeyAveraged

                self._decoders[key_average] = KeyAveraged(plain, self.tokenizer, key_average)
        return self._decoders[key_average]

    @property
    def decoder(self):
        """The decoder of the default ``key_average``."""
        return self.decoder_for(self._key_average)

    def constraint_tokenizer(self, options: SamplingOptions, tokenizer=None):
        """The tokenizer whose constraint keeps sampled music well-formed under ``options``
        (``voice_leading``, ``note_limit``); the run's own unless ``tokenizer`` is given."""
        tokenizer = tokenizer or self.tokenizer
        if not options.voice_leading:
            tokenizer = tokenizer.without_voice_leading()
        if not options.note_limit:
            tokenizer = tokenizer.without_note_limit()
        return tokenizer

    # -- text ------------------------------------------------------------------------------------
    @property
    def short_documents(self) -> bool:
        """Whether the model was trained on short documents, one per line (``--documents lines`` or
        ``--column``): each sample then ends at the first newline the model writes."""
        return self.config.modality == "text" and (self.config.documents == "lines" or bool(self.config.column))

    def encode_prompt(self, prompt: str) -> list[int]:
        """Prompt text -> ids; characters outside the vocabulary are a GeneratorError naming them."""
        from generator.data.tokenizers.chars import describe_chars

        unknown = getattr(self.tokenizer, "unknown", None)
        if unknown is not None and unknown(prompt):
            raise GeneratorError("the prompt has characters the model never saw: " + describe_chars(unknown(prompt)))
        return self.tokenizer.encode(prompt)

    def prompt_tail(self, ids: list[int], prompt_tokens: int | None = None, log=None) -> list[int]:
        """The last ``prompt_tokens`` of ``ids`` (default: the ``prompt_tokens`` limit; 0: all), with a
        notice through ``log`` (default: stderr) when that cuts the prompt."""
        from generator.data import limits

        if prompt_tokens is not None and int(prompt_tokens) < 0:
            raise ArgumentError("prompt_tokens", f"must be at least 0, not {prompt_tokens}")
        ids, notice = limits.tail(ids, limit=prompt_tokens)
        if notice:
            (log or (lambda message: print(message, file=sys.stderr)))(notice)
        return ids

    def stream(
        self,
        prompt_ids: list[int],
        length: int,
        *,
        num_samples: int = 1,
        options: SamplingOptions | None = None,
        tokenizer=None,
        **sampling_options,
    ) -> Stream:
        """Sample ``length`` new tokens after ``[BOS] + prompt_ids``: a ``Stream`` of chunks
        ``[num_samples, n]`` whose ``constraint_state`` is the tokenizer's state at the end.

        ``options`` (or their fields as keywords: ``temperature=0.8``) say how; ``tokenizer``
        replaces the run's tokenizer for the sampling constraint (a seed's own, say).
        """
        from generator.generation import sampling

        options = self.options(options, **sampling_options)
        tokenizer = self.constraint_tokenizer(options, tokenizer)
        check_length(length)
        if isinstance(num_samples, bool) or not isinstance(num_samples, (int, np.integer)) or num_samples < 1:
            raise ArgumentError("num_samples", f"must be a whole number, at least 1, not {num_samples}")
        seed = secrets.randbits(62) if options.random_seed is None else int(options.random_seed)
        row = np.array([BOS] + list(prompt_ids), dtype=np.int32)
        prompts = np.broadcast_to(row, (num_samples, len(row)))  # one copy of the prompt for all samples
        constraint = None
        if tokenizer.has_constraint:
            state = tokenizer.new_constraint_state(num_samples)
            for column in prompts[:, 1:].T:
                state = tokenizer.advance(state, column)
            constraint = sampling.Constraint(tokenizer, state)
        key = (options.key_average, options.temperature, options.top_k, options.top_p, options.repetition)
        loop = self._loops.pop(key, None) or sampling.DecodeLoop(  # a compiled loop for each key
            self.decoder_for(options.key_average),
            sampling.get(options.temperature, options.top_k, self.top_p(options.top_p)),
            repetition=options.repetition,
        )
        self._loops[key] = loop  # reused by later calls with the same sampler
        if len(self._loops) > 8:  # keep the eight most recently used
            del self._loops[next(iter(self._loops))]
        return Stream(loop.generate(prompts, length, seed, constraint), constraint, options, loop)

    def generate(
        self,
        prompt: str = "",
        length: int | None = None,
        *,
        seed=None,
        num_samples: int = 1,
        options: SamplingOptions | None = None,
        prompt_tokens: int | None = None,
        **keywords,
    ):
        """Sample from the model, as ``options`` say (or their fields as keywords: ``temperature=0.7``).

        Text models return ``prompt`` plus ``length`` (default 500) new characters as a ``Text``
        (a ``str`` with ``.save(path)``), a list of them when ``num_samples`` > 1; only the last
        ``prompt_tokens`` tokens of the prompt prime the model (default: the ``prompt_tokens`` limit
        of ``generator.data.limits``, 2048; 0 for all), with a notice on stderr when that cuts it::

            >>> generator.load("shakespeare").generate("KING:", length=100, temperature=0.7).save("king.txt")

        Music models continue ``seed`` (a score file or NoteSequence; None composes from scratch)
        by ``length`` tokens (default 1000) or ``seconds=``, and return a ``Music`` object (a
        list with ``num_samples`` > 1) with ``.save(path)``, ``.to_pretty_midi()`` and
        ``.to_music21()``; ``prime_seconds=``/``prime_tokens=`` choose how much of the seed's end
        primes the model, ``continuation_only=True`` leaves the seed out::

            >>> generator.load("bach").generate(seed="song.mid", temperature=0.9, seconds=20).save("out.mid")
        """
        fields = {f.name for f in dataclasses.fields(SamplingOptions)}
        options = self.options(options, **{k: v for k, v in keywords.items() if k in fields})
        music_options = {k: v for k, v in keywords.items() if k not in fields}
        if self.tokenizer.modality == "music":
            from generator.generation.compose import compose

            pieces = compose(self, seed, length=length, num_samples=num_samples, options=options, **music_options)
            return pieces[0] if num_samples == 1 else pieces
        if music_options:
            raise ArgumentError(
                next(iter(music_options)),
                f"is not an argument of a text model's generate ({self.run.path.name} is a text model)",
            )
        from generator.progress import track

        length = 500 if length is None else length
        ids = self.prompt_tail(self.encode_prompt(prompt), prompt_tokens)
        chunks = list(track(self.stream(ids, length, num_samples=num_samples, options=options), length))
        tokens = np.concatenate(chunks, axis=1) if chunks else np.zeros((num_samples, 0), np.int32)
        texts = [prompt + self.tokenizer.decode(row) for row in tokens]
        if self.short_documents:  # each sample is one document: up to the newline that ends it
            texts = [prompt + text[len(prompt) :].split("\n", 1)[0] for text in texts]
        texts = [Text(text) for text in texts]
        return texts[0] if num_samples == 1 else texts

    # -- harmonizing (the harmonizer checkpoint) -------------------------------------------------
    def harmonize(
        self,
        melody,
        *,
        voices=None,
        infill=None,
        iterations: int | None = None,
        num_samples: int = 1,
        split: str | None = None,
        index: int | None = None,
        options: SamplingOptions | None = None,
        **sampling_options,
    ):
        """Write the voices under a melody, or rewrite part of a chorale, by pseudo-Gibbs sampling.

        ``melody``: a score file (MIDI, MusicXML, ABC, kern; its only line or top line becomes the
        soprano, or all four voices of a four-part piece), a JSB Chorales .json with ``split`` and
        ``index``, a ``NoteSequence``, a ``[steps, 4]`` grid or a 1-D array of soprano pitches per
        16th note. ``voices`` names those to write (default alto, tenor, bass; all four with
        ``infill``); ``infill=(start, end)`` or ``"8-16"`` (beats) rewrites only that passage.
        Of the sampling options, ``temperature``, ``random_seed`` and ``voice_leading`` apply:
        ``voice_leading=False`` drops the voice-leading rules (no crossing, spacing, no parallel
        fifths or octaves) that mask each drawn cell. Returns a ``Music`` object (a list with
        ``num_samples`` > 1), like ``generate``::

            >>> generator.load("harmonizer").harmonize("melody.mid", random_seed=1).save("chorale.mid")
        """
        from generator.generation import harmonize

        options = (options or SamplingOptions()).replace(**sampling_options)
        pieces = harmonize.harmonize(
            self,
            melody,
            voices=voices,
            infill=infill,
            iterations=harmonize.DEFAULT_ITERATIONS if iterations is None else iterations,
            temperature=options.temperature,
            num_samples=num_samples,
            random_seed=options.random_seed,
            split=split,
            index=index,
            voice_leading=options.voice_leading,
        )
        return pieces[0] if num_samples == 1 else pieces

    # -- scoring ---------------------------------------------------------------------------------
    def evaluate(
        self, corpus: str, *, split: str = "", encoding: str = "utf-8", key_average: int | None = None
    ) -> dict:
        """Mean NLL per token of ``corpus`` (nats and bits), each document scored from its start.

        ``corpus`` may also be ``heldout:CHECKPOINT`` (music): the whole pieces that checkpoint held
        out for validation. The scores are of the distribution sampling with the same
        ``key_average`` uses (default: the Generator's ``key_average``)."""
        from generator.data import corpora
        from generator.data import dataset
        from generator.evaluation import music_stats
        from generator.evaluation.likelihood import evaluate_documents

        key_average = self.options(key_average=key_average).key_average
        if str(corpus).startswith(music_stats.HELD_OUT_PREFIX):
            if self.config.modality != "music":
                raise GeneratorError(
                    f"{corpus} names music pieces; {self.run.path.name} is a {self.config.modality} model"
                )
            source = music_stats.held_out_corpus(str(corpus)[len(music_stats.HELD_OUT_PREFIX) :])
        else:
            source = corpora.open_corpus(str(corpus), self.config.modality, split=split, encoding=encoding)
        data = dataset.tokenize(source, TokenizerFactory(self.config.tokenizer, fixed=self.tokenizer))
        result = evaluate_documents(
            self.decoder_for(key_average), [data.document(i) for i in range(data.num_documents)]
        )
        result["corpus"] = source.name
        result["key_average"] = key_average
        return result

    def evaluate_continuations(
        self,
        corpus: str,
        *,
        split: str = "",
        continuations: int = 4,
        prompt_beats: float = 8.0,
        continuation_beats: float = 16.0,
        max_pieces: int | None = None,
        options: SamplingOptions | None = None,
        log=None,
        **sampling_options,
    ) -> dict:
        """Continue the first ``prompt_beats`` beats of every piece of ``corpus`` ``continuations`` times and
        compare with the real continuations (``generator evaluate --continuations``; music models).
        Piece i is sampled with ``random_seed + i`` (default ``random_seed`` 0, so that figures repeat)::

            >>> generator.load("bach").evaluate_continuations("heldout:bach", continuations=4)["mean_oa"]
        """
        from generator.evaluation.continuations import evaluate_continuations
        from generator.evaluation.music_stats import load_set

        if self.config.modality != "music":
            raise GeneratorError(f"continuations need a music model; {self.run.path.name} is {self.config.modality}")
        options = self.options(options, **sampling_options)
        if options.random_seed is None:
            options = options.replace(random_seed=0)
        pieces = load_set(str(corpus), split=split, report=log)[:max_pieces]
        result = evaluate_continuations(
            self,
            pieces,
            samples=continuations,
            prompt_beats=prompt_beats,
            continuation_beats=continuation_beats,
            options=options,
            log=log,
        )
        return {"checkpoint": self.run.path.name, "corpus": str(corpus) + (f":{split}" if split else ""), **result}


def check_length(length) -> None:
    if not isinstance(length, (int, np.integer)) or length < 1 or length > MAX_LENGTH:
        raise ArgumentError("length", f"must be between 1 and {MAX_LENGTH:,}, not {length}")
