"""Jupyter kernels the lab starts (sweep points, the report): IPC transport, no network port."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any


def ipc_kernel_manager(folder: str | Path, kernel_name: str = "python3") -> Any:
    """A kernel manager (not started) whose sockets are files in `folder`: IPC transport, so the
    kernel never warns "running over TCP without encryption" into the user's output."""
    from jupyter_client.manager import AsyncKernelManager

    return AsyncKernelManager(kernel_name=kernel_name, transport="ipc", ip=os.path.join(folder, "ipc"))
