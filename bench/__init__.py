"""Benchmarks (run as scripts: `.venv/bin/python bench/<name>.py`) and what they share."""
