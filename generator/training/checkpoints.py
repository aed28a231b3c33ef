"""Run directories: what a training run writes and what sampling loads.

A run directory holds::

    config.json      RunConfig: the single source of truth for rebuilding the model
    tokenizer.json   the vocabulary
    model.keras      the best weights, an ordinary Keras model (loaded with safe_mode=True)
    metrics.json     validation loss in nats and bits per token, corpus fingerprint, versions
    history.csv      one line per epoch
    logs/            TensorBoard event files
    resume.npz       weights, optimizer state and loop position of the last checkpoint

Every file is written to a temporary name and renamed into place, so a crash never leaves a
half-written file. ``load_run`` validates all of it and turns every problem into a
``GeneratorError`` naming the file.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from generator.config import FORMAT_VERSION, RunConfig
from generator.errors import GeneratorError

REQUIRED_FILES = ("config.json", "tokenizer.json", "model.keras")


def bundled_dir() -> Path:
    """The folder holding the bundled checkpoints (repository ``checkpoints/``, shipped in the wheel)."""
    from generator.resources import bundled_folder

    return bundled_folder("_checkpoints", "checkpoints")


def bundled_names() -> list[str]:
    root = bundled_dir()
    return sorted(p.name for p in root.iterdir() if (p / "config.json").exists()) if root.is_dir() else []


def resolve(name_or_path: str | os.PathLike) -> Path:
    """A bundled checkpoint name or a run directory -> the run directory's path.

    A folder that is not a run directory (no config.json) never hides the bundled checkpoint of
    its name: a folder of songs called ``band`` in the working directory leaves ``band`` the model.
    """
    path = Path(name_or_path).expanduser()
    if path.is_dir() and ((path / "config.json").exists() or str(name_or_path) not in bundled_names()):
        return path
    if str(name_or_path) in bundled_names():
        return bundled_dir() / str(name_or_path)
    names = ", ".join(bundled_names()) or "none installed"
    raise GeneratorError(f"checkpoint {name_or_path} not found: give a run directory or a bundled name ({names})")


# -- atomic writes ----------------------------------------------------------------------------


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same folder and a rename."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def write_json(path: Path, obj) -> None:
    atomic_write_text(path, json.dumps(obj, indent=1, sort_keys=True, ensure_ascii=False) + "\n")


def save_model(model, path: Path) -> None:
    """Save a Keras model atomically (Keras wants the temporary name to end in .keras)."""
    path = Path(path)
    tmp = path.with_name(f".{path.stem}.tmp.keras")
    try:
        model.save(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def remove_partial_writes(folder: Path) -> None:
    """Delete temporary files that a killed ``atomic_write_bytes`` or ``save_model`` left in ``folder``."""
    for leftover in list(Path(folder).glob(".*.tmp")) + list(Path(folder).glob(".*.tmp.keras")):
        leftover.unlink(missing_ok=True)


# -- loading -----------------------------------------------------------------------------------


@dataclass
class Run:
    """A loaded run directory."""

    path: Path
    config: RunConfig
    tokenizer: object
    model: object
    metrics: dict


def read_config(run_dir: Path) -> RunConfig:
    path = Path(run_dir) / "config.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        config = RunConfig.from_dict(data)
    except FileNotFoundError:
        raise GeneratorError(f"{path} is missing: {run_dir} is not a complete run directory") from None
    except (ValueError, TypeError, UnicodeDecodeError) as e:
        raise GeneratorError(f"{path} is not a valid run configuration: {e}") from None
    if config.format_version != FORMAT_VERSION:
        raise GeneratorError(
            f"{run_dir} was written by an incompatible version (format "
            f"{config.format_version}, this version reads {FORMAT_VERSION})"
        )
    return config


def read_tokenizer(run_dir: Path):
    from generator.data.tokenizers.base import from_json

    path = Path(run_dir) / "tokenizer.json"
    try:
        return from_json(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise GeneratorError(f"{path} is missing: {run_dir} is not a complete run directory") from None
    except (ValueError, TypeError, KeyError, UnicodeDecodeError) as e:
        raise GeneratorError(f"{path} is not a valid tokenizer file: {e}") from None


def read_metrics(run_dir: Path) -> dict:
    path = Path(run_dir) / "metrics.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def load_run(name_or_path) -> Run:
    """Load and validate a run directory or bundled checkpoint."""
    run_dir = resolve(name_or_path)
    missing = [f for f in REQUIRED_FILES if not (run_dir / f).exists()]
    if missing:
        raise GeneratorError(f"{run_dir} is not a complete run directory: missing {', '.join(missing)}")
    config = read_config(run_dir)
    tokenizer = read_tokenizer(run_dir)
    import keras

    from generator import models

    try:
        models.module(config.arch)  # registers the arch's own layers before Keras reads the file
    except ValueError as e:
        raise GeneratorError(f"{run_dir}/config.json: {e}") from None
    path = run_dir / "model.keras"
    try:
        model = keras.saving.load_model(path, compile=False, safe_mode=True)
    except Exception as e:  # Keras raises many types for a damaged archive
        first_line = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        raise GeneratorError(f"{path} cannot be loaded as a Keras model: {first_line}") from None
    vocab = int(model.output_shape[-1])
    if vocab != tokenizer.vocab_size or vocab != config.vocab_size:
        raise GeneratorError(
            f"{run_dir}: the model predicts {vocab} tokens but tokenizer.json has "
            f"{tokenizer.vocab_size} and config.json says {config.vocab_size}"
        )
    return Run(run_dir, config, tokenizer, model, read_metrics(run_dir))


def save_run(run_dir, model, tokenizer, config: RunConfig, metrics: dict | None = None) -> Path:
    """Write a loadable run directory for ``model`` (used for exports and tests)."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(run_dir / "config.json", config.to_json() + "\n")
    atomic_write_text(run_dir / "tokenizer.json", tokenizer.to_json() + "\n")
    save_model(model, run_dir / "model.keras")
    write_json(run_dir / "metrics.json", metrics or {})
    return run_dir
