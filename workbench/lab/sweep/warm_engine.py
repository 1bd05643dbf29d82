"""A papermill engine for an already running kernel: a prologue first, then the notebook.

papermill's own nbclient engine accepts a kernel manager (`km=`) and leaves its kernel running,
but it also leaves the client it opened (sockets and a heartbeat thread) behind on every
notebook. This engine closes it, and first runs `prologue` (code that is not part of the
notebook: the warm kernel's namespace reset and working directory) through that same
client. Registered under ENGINE for `engine_name=`.
"""

from __future__ import annotations

from typing import Any

from papermill.clientwrap import PapermillNotebookClient
from papermill.engines import NBClientEngine, papermill_engines
from papermill.log import logger
from traitlets import Unicode

from workbench.lab.sweep.executor_base import KernelSetupError

ENGINE = "workbench-warm"


class WarmClient(PapermillNotebookClient):
    """papermill's client, running a prologue before the notebook's cells."""

    prologue = Unicode("", help="code run before the first cell, outside the notebook")

    def papermill_execute_cells(self) -> None:
        """The prologue (its outputs are dropped; an error raises), then every cell."""
        if self.prologue:
            reply = self.wait_for_reply(self.kc.execute(self.prologue, store_history=False))
            content = (reply or {}).get("content", {"status": "timeout"})
            if content["status"] != "ok":
                raise KernelSetupError(
                    f"kernel set-up failed: {content.get('ename', 'timeout')}: {content.get('evalue', '')}"
                )
        super().papermill_execute_cells()


class WarmKernelEngine(NBClientEngine):
    """nbclient on the kernel manager passed as `km` (required)."""

    @classmethod
    def execute_managed_notebook(
        cls,
        nb_man: Any,
        kernel_name: str,
        log_output: bool = False,
        stdout_file: Any = None,
        stderr_file: Any = None,
        start_timeout: int = 60,
        execution_timeout: int | None = None,
        **kwargs: Any,
    ) -> Any:
        """Execute the prologue and every cell on kwargs['km']'s kernel, which keeps running;
        through kwargs['kc'] when given (a connected client the caller keeps), else a new one."""
        kwargs.pop("input_path", None)
        kc = kwargs.pop("kc", None)
        if kwargs.get("km") is None:
            raise ValueError(f"the {ENGINE} engine needs km= (a started kernel manager)")
        client = WarmClient(
            nb_man,
            timeout=execution_timeout,
            startup_timeout=start_timeout,
            kernel_name=kernel_name,
            log=logger,
            log_output=log_output,
            stdout_file=stdout_file,
            stderr_file=stderr_file,
            **kwargs,
        )
        client.kc = kc  # nbclient opens a client only when it has none
        try:
            return client.execute()
        finally:
            if kc is None and client.kc is not None:
                client.kc.stop_channels()


def register() -> None:
    """Make the engine known to papermill (idempotent)."""
    papermill_engines.register(ENGINE, WarmKernelEngine)
