"""Tidy tables, statistics, pre-registration and audit of the study."""
