"""The grading pipeline (detector -> level -> grade + segmenter); built in the grade-study issue."""
from __future__ import annotations

from grading.cli.common import EXIT_USAGE, CommandError


def grade_studies(args, bundle) -> int:
    raise CommandError(f"model bundle {bundle} found, but this build grades dry runs only (--dry-run)", EXIT_USAGE)
