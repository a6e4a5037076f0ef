"""grade-label: a blinded rater workstation in the browser, and review of grade-study's calls."""
