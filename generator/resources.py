"""Where the data shipped with the package lives (bundled checkpoints, corpus definitions)."""

from __future__ import annotations

import importlib.util
from pathlib import Path


def bundled_folder(subpackage: str, repository_folder: str) -> Path:
    """The installed folder of ``generator.<subpackage>``, else the repository's own folder.

    The wheel maps the repository's ``checkpoints/`` and ``corpora/`` to ``generator._checkpoints``
    and ``generator._corpora``; running from a source checkout finds them beside the package.
    """
    try:
        spec = importlib.util.find_spec(f"generator.{subpackage}")
    except (ImportError, ValueError):
        spec = None
    if spec is not None and spec.submodule_search_locations:
        for location in spec.submodule_search_locations:
            if Path(location).is_dir():
                return Path(location)
    return Path(__file__).resolve().parent.parent / repository_folder
