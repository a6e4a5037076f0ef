"""Where grade-study finds its model bundle: --models, else $GRADING_MODELS, else the demo bundle."""
from __future__ import annotations

import os
from pathlib import Path


def user_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "lss-grading"


def demo_bundle_dir() -> Path:
    return user_cache_dir() / "demo" / "models"


def find_model_bundle(explicit: str | os.PathLike | None) -> Path | None:
    """The bundle folder to use, or None when there is none anywhere.

    A folder named by --models or $GRADING_MODELS is returned as is, so the loader can say
    what is wrong with it rather than silently falling back to another bundle.
    """
    named = explicit or os.environ.get("GRADING_MODELS")
    if named:
        return Path(named)
    demo = demo_bundle_dir()
    return demo if (demo / "manifest.json").is_file() else None
