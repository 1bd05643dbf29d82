"""Client private state beyond a memory budget, kept on disk (`federation.hot_clients`).

At most `hot` clients hold live state; when one more is set up, the least recently used one's
state (its modules' state dicts and whatever else its method keeps, tensors and plain
containers only) is written with torch's own format, atomically (`core.files.replacing`), to a
file of its own that is never written again: `<folder>/<cid>-<n>.pt`, n counting the store's
writes. When that client is needed again it is set up as on first use and its saved state is
loaded over it (`torch.load(mmap=True, weights_only=True)`), so a run gives bit for bit what an
all-in-memory run gives.

A checkpoint refers to a client on disk by its file's name and SHA-256 (`reference`) instead of
copying its tensors; because files are immutable, the reference stays true until the file is
deleted, and a file is deleted only when neither the live store (the client's latest state) nor
the latest checkpoint (`checkpointed`) refers to it. A resumed run rebuilds the store from the
checkpoint's references (`restore`), each file checked against its hash first; files no one
refers to (those an interrupted run wrote after its last checkpoint) are never read and are
removed (`tidy`).
"""

from __future__ import annotations

import hashlib
import re
import shutil
import tempfile
from collections import OrderedDict
from pathlib import Path
from typing import Any

import torch
from torch.utils._pytree import tree_map

from workbench.algorithms import Algorithm, Client
from workbench.core import files
from workbench.core.errors import DamagedFileError
from workbench.loop.client_state import client_state, load_client_state

SPILL_FOLDER = "client-state"
_NAME = re.compile(r"(\d+)-(\d+)\.pt")  # <cid>-<n>.pt


def _copy(value: Any) -> Any:
    """Detach a value read from a memory-mapped file from that file."""
    return tree_map(lambda t: t.clone() if isinstance(t, torch.Tensor) else t, value)


def sha256(path: Path) -> str:
    """The file's SHA-256, hex."""
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


class ClientStore:
    """Live state for at most `hot` clients; the rest on disk under `folder`."""

    def __init__(self, algorithm: Algorithm, hot: int, folder: Path | str | None = None) -> None:
        if hot < 1:
            raise ValueError(f"hot={hot}: a store keeps at least one client in memory")
        self.algorithm, self.hot = algorithm, hot
        self._temp: tempfile.TemporaryDirectory[str] | None = None
        if folder is None:
            self._temp = tempfile.TemporaryDirectory(prefix="wb-clients-")
            folder = self._temp.name
        self.folder = Path(folder)
        self._live: OrderedDict[int, Client] = OrderedDict()  # least recently used first
        self._saved: dict[int, str] = {}  # client → the file holding its latest state
        self._digests: dict[str, str] = {}  # file → its SHA-256, once a checkpoint needed it
        self._pinned: set[str] = set()  # the files the latest checkpoint refers to
        self._next = 0  # n of the next file written

    def _read(self, name: str) -> dict[str, Any]:
        device = self.algorithm.env.device
        saved = torch.load(self.folder / name, map_location=device, weights_only=True, mmap=True)
        return _copy(saved)

    def _drop(self, name: str) -> None:
        """Delete a file the live store no longer refers to, unless the checkpoint does."""
        if name not in self._pinned:
            (self.folder / name).unlink(missing_ok=True)
            self._digests.pop(name, None)

    def materialize(self, client: Client, keep: bool = True) -> None:
        """Give the client live state (set up on first use, or read back from disk), keeping
        at most `hot` clients live; the least recently used beyond that go to disk. With
        `keep` False (an evaluation that changes nothing) a client not live is given its
        state without counting as used: the caller lets it go after, and its file stays."""
        if not client.state:
            self.algorithm.setup_client(client)
            name = self._saved.get(client.cid)
            if name is not None:
                load_client_state(client, self._read(name))
            if not keep:
                return
            if name is not None:  # live from here on: its file is out of date
                del self._saved[client.cid]
                self._drop(name)
        if not keep:
            return
        self._live[client.cid] = client
        self._live.move_to_end(client.cid)
        while len(self._live) > self.hot:
            _, old = self._live.popitem(last=False)
            self._spill(old)

    def _spill(self, client: Client) -> None:
        name = f"{client.cid}-{self._next}.pt"
        self._next += 1
        with files.replacing(self.folder / name) as tmp, open(tmp, "wb") as handle:
            torch.save(client_state(client), handle)
        if (old := self._saved.get(client.cid)) is not None:
            self._drop(old)
        self._saved[client.cid] = name
        client.state.clear()

    def reference(self, client: Client) -> dict[str, str] | None:
        """For a client whose state is on disk, its file's name and SHA-256 (what a checkpoint
        records instead of the tensors); None for a live client or one never set up."""
        if client.state or (name := self._saved.get(client.cid)) is None:
            return None
        if name not in self._digests:  # hashed once: the file never changes
            self._digests[name] = sha256(self.folder / name)
        return {"file": name, "sha256": self._digests[name]}

    def checkpointed(self, references: dict[int, dict[str, str]]) -> None:
        """A checkpoint with these references was written: the files only the previous one
        referred to are deleted."""
        before, self._pinned = self._pinned, {ref["file"] for ref in references.values()}
        current = set(self._saved.values())
        for name in before - self._pinned - current:
            self._drop(name)

    def restore(self, references: dict[int, dict[str, str]], remedy: str) -> None:
        """Refer again to the files a checkpoint refers to, each checked against its SHA-256
        first: DamagedFileError naming a file missing or changed, with `remedy` (the others
        are kept, as the checkpoint still refers to them)."""
        for ref in references.values():
            if not _NAME.fullmatch(ref["file"]):  # a name of this store's, never a path
                raise DamagedFileError(self.folder, f"the checkpoint names {ref['file']!r} in it", remedy)
        self._pinned = {ref["file"] for ref in references.values()}
        for ref in references.values():
            path = self.folder / ref["file"]
            if not path.is_file():
                raise DamagedFileError(path, "it is missing, and the checkpoint refers to it", remedy)
            if (digest := sha256(path)) != ref["sha256"]:
                recorded = ref["sha256"]
                problem = (
                    f"its SHA-256 is {digest[:12]}…, the checkpoint recorded {recorded[:12]}…: changed since"
                )
                raise DamagedFileError(path, problem, remedy)
        for cid, ref in references.items():
            self._saved[int(cid)] = ref["file"]
            self._digests[ref["file"]] = ref["sha256"]
            version = _NAME.fullmatch(ref["file"])  # checked above: every name is one of ours
            assert version is not None
            self._next = max(self._next, int(version.group(2)) + 1)

    def tidy(self) -> None:
        """Remove the folder's files no one refers to (an interrupted run's latest, or
        temporary files it left)."""
        if not self.folder.is_dir():
            return
        keep = self._pinned | set(self._saved.values())
        for path in self.folder.iterdir():
            if path.name not in keep and path.is_file():
                path.unlink(missing_ok=True)

    def close(self, checkpoint_kept: bool = False) -> None:
        """The loop is over: remove the files, all of them, or with `checkpoint_kept` (the run
        did not finish and its checkpoint stays for a resume) all but those it refers to."""
        if self._temp is not None:
            self._temp.cleanup()
        elif checkpoint_kept and self._pinned:
            self._saved.clear()
            self.tidy()
        else:
            shutil.rmtree(self.folder, ignore_errors=True)
