"""Synthetic axial T2 lumbar MRI cohorts with ground truth and two simulated raters."""
