"""Reads: plain functions returning querysets, rows or arrays for views and exports."""
