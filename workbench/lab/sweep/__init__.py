"""Unattended sweeps: a spec's grid points run as papermill executions of the notebook, on warm
local kernels or as Ray tasks, resumable, then reported (`workbench.lab.report`)."""
