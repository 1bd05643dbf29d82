"""Client private state beyond a memory budget, kept on disk (`federation.hot_clients`).

At most `hot` clients hold live state; when one more is set up, the least recently used one's
state (its modules' state dicts and whatever else its method keeps, tensors and plain
containers only) is written to `<folder>/<cid>.pt` with torch's own format, atomically
(`core.files.replacing`), and dropped from memory. When that client is needed again it is set up
as on first use and its saved state is loaded over it (`torch.load(mmap=True,
weights_only=True)`), so a run gives bit for bit what an all-in-memory run gives. Files left by
an earlier, interrupted run are never read: a store starts knowing of no saved client.
"""

from __future__ import annotations

import shutil
import tempfile
from collections import OrderedDict
from pathlib import Path
from typing import Any

import torch
from torch.utils._pytree import tree_map

from workbench.algorithms import Algorithm, Client
from workbench.core import files
from workbench.loop.checkpoint import client_state, load_client_state

SPILL_FOLDER = "client-state"


def _copy(value: Any) -> Any:
    """Detach a value read from a memory-mapped file from that file."""
    return tree_map(lambda t: t.clone() if isinstance(t, torch.Tensor) else t, value)


class ClientStore:
    """Live state for at most `hot` clients; the rest on disk under `folder`."""

    def __init__(self, algorithm: Algorithm, hot: int, folder: Path | None = None) -> None:
        if hot < 1:
            raise ValueError(f"hot={hot}: a store keeps at least one client in memory")
        self.algorithm, self.hot = algorithm, hot
        self._temp = None if folder is not None else tempfile.TemporaryDirectory(prefix="wb-clients-")
        self.folder = Path(folder) if folder is not None else Path(self._temp.name)
        self._live: OrderedDict[int, Client] = OrderedDict()  # least recently used first
        self._saved: set[int] = set()

    def _path(self, cid: int) -> Path:
        return self.folder / f"{cid}.pt"

    def _read(self, cid: int) -> dict[str, Any]:
        device = self.algorithm.env.device
        saved = torch.load(self._path(cid), map_location=device, weights_only=True, mmap=True)
        return _copy(saved)

    def materialize(self, client: Client, keep: bool = True) -> None:
        """Give the client live state (set up on first use, or read back from disk), keeping
        at most `hot` clients live; the least recently used beyond that go to disk. With
        `keep` False (an evaluation that changes nothing) a client not live is given its
        state without counting as used: the caller lets it go after."""
        if not client.state:
            self.algorithm.setup_client(client)
            if client.cid in self._saved:
                load_client_state(client, self._read(client.cid))
            if not keep:
                return
        if not keep:
            return
        self._live[client.cid] = client
        self._live.move_to_end(client.cid)
        while len(self._live) > self.hot:
            _, old = self._live.popitem(last=False)
            self._spill(old)

    def _spill(self, client: Client) -> None:
        with files.replacing(self._path(client.cid)) as tmp, open(tmp, "wb") as handle:
            torch.save(client_state(client), handle)
        self._saved.add(client.cid)
        client.state.clear()

    def state_of(self, client: Client) -> dict[str, Any]:
        """The client's state as a checkpoint stores it, live or on disk ({} if never set up)."""
        if client.state:
            return client_state(client)
        return self._read(client.cid) if client.cid in self._saved else {}

    def close(self) -> None:
        """Remove the files (the run is over, or they were temporary)."""
        if self._temp is not None:
            self._temp.cleanup()
        else:
            shutil.rmtree(self.folder, ignore_errors=True)
