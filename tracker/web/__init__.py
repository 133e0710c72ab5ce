"""Server-rendered web UI (templates + htmx + uPlot)."""
