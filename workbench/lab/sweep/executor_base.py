"""What every sweep executor shares: where and how points run (`Execution`), the callback a
finished point reports to, and the error of a kernel unfit to run a point."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from workbench.config import ConfigError

EXECUTORS = ("local", "ray")
Done = Callable[[str, dict[str, Any]], None]


@dataclass(frozen=True)
class Execution:
    """Where and how points run: local warm kernels (`workers` of them) or Ray tasks."""

    executor: str = "local"
    workers: int | None = None  # parallel points (local default 1; Ray default: what fits)
    address: str | None = None  # Ray cluster address (default RAY_ADDRESS, else the local head)
    cpus: float = 1.0  # Ray resources per point
    gpus: float = 0.0
    fresh_kernels: bool = False  # local: a new kernel per point instead of a warm one
    threads: int | None = None  # torch threads per point (local: cores ÷ workers; Ray: cpus)

    def check(self) -> None:
        """Refuse impossible settings before anything runs."""
        if self.executor not in EXECUTORS:
            raise ConfigError(f"executor={self.executor!r} is unknown; allowed: {', '.join(EXECUTORS)}")
        if self.workers is not None and self.workers < 1:
            raise ConfigError(f"workers={self.workers} must be >= 1")
        if self.threads is not None and self.threads < 1:
            raise ConfigError(f"threads={self.threads} must be >= 1")
        if self.cpus <= 0 or self.gpus < 0:
            raise ConfigError(f"cpus={self.cpus} must be > 0 and gpus={self.gpus} >= 0 per point")
        if self.executor == "local" and (self.address or self.gpus or self.cpus != 1.0):
            raise ConfigError("address, cpus and gpus per point apply to --executor ray only")


class KernelSetupError(RuntimeError):
    """The kernel's warm imports or a point's prologue failed: it is not fit to run the notebook."""
