"""Reports of finished sweeps: tidy tables with seed intervals, Plotly figures, the verdict,
provenance, and the export to one self-contained HTML page. Nothing here imports torch."""
