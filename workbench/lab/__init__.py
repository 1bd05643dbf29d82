"""The lab: notebook glue, the interactive tuner, sweeps and reports."""
