"""Committed experiments behind the reports in reports/ (each runnable with python -m)."""
