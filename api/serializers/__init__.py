"""Explicit input and output serializers per endpoint (no ModelSerializer mass assignment)."""
