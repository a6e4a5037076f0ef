"""Console entry points; each module's ``main`` is one command of SPEC.md."""
