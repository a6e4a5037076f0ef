"""Where grade-study writes, and how: safe folder names, and whole-folder atomic replacement."""
from __future__ import annotations

import glob
import re
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path


def safe_name(text: str, fallback: str = "study") -> str:
    """A folder name from user-facing text: letters, digits, '.', '_' and '-' only; never '..'."""
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._-")[:80]
    return cleaned or fallback


def _recover(target: Path) -> None:
    """Undo what a killed earlier run left: the previous outputs set aside but not yet replaced
    are put back, and half-built temporary folders are removed."""
    old = target.with_name(f".{target.name}.old")
    if old.is_dir() and not target.exists():
        old.rename(target)
    for stale in target.parent.glob(f".{glob.escape(target.name)}.*.tmp"):
        shutil.rmtree(stale, ignore_errors=True)


def replace_folder(target: Path, fill: Callable[[Path], object]) -> object:
    """Build a new folder with ``fill`` and swap it in: readers see the old outputs or the new ones.

    If ``fill`` fails (or the process is killed), the previous outputs stay as they were and the
    half-built folder is a hidden temporary one beside them.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    _recover(target)
    building = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    try:
        result = fill(building)
        old = None
        if target.exists():
            old = target.with_name(f".{target.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            target.rename(old)
        building.rename(target)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        return result
    finally:
        shutil.rmtree(building, ignore_errors=True)
