"""Figures and human-readable reports."""
