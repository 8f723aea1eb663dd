"""Figures of the study, each regenerated from the tidy tables."""
