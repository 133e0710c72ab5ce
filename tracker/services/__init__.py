"""Writes: plain functions with typed arguments, called by API views, web views and tasks."""
