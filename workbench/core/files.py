"""Files other processes read: written by write-then-rename, read back with a damage named.

Every file of a run directory, a checkpoint and a sweep folder is written to a temporary name
beside it and renamed over it (`os.replace` is atomic within one filesystem), so a reader — the
report, a resumed run, a second process — sees the old file or the new one, never half of one.
A file that cannot be read back (cut short by a full disk or an interrupted copy, not JSON, not
a table, a checkpoint whose bytes changed) raises `DamagedFileError` naming the file, what is
wrong with it and what to do. This module never imports torch: a checkpoint is a zip archive,
checked here by its CRCs.
"""

from __future__ import annotations

import json
import os
import uuid
import zipfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pandas as pd

from workbench.core.errors import DamagedFileError


@contextmanager
def replacing(path: str | Path, keep_on_error: bool = False) -> Iterator[Path]:
    """A temporary path beside `path` to write; renamed onto `path` when the block ends.

    On an error the temporary file is removed (the old file stays), or with keep_on_error
    renamed too (a tool that writes its output also when it fails, e.g. papermill)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # the suffix stays last: tools that check an extension (papermill: .ipynb) accept the name
    tmp = path.with_name(f".{path.stem}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp{path.suffix}")
    try:
        yield tmp
    except BaseException:
        if keep_on_error and tmp.exists():
            os.replace(tmp, path)
        else:
            tmp.unlink(missing_ok=True)
        raise
    if tmp.exists():  # a writer that chose to write nothing leaves the old file as it was
        os.replace(tmp, path)


def write_text(path: str | Path, text: str) -> None:
    """Replace a text file (UTF-8) whole."""
    with replacing(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_bytes(path: str | Path, data: bytes) -> None:
    """Replace a file's bytes whole."""
    with replacing(path) as tmp:
        tmp.write_bytes(data)


def write_json(path: str | Path, value: Any, **dumps: Any) -> None:
    """Replace a JSON file whole (`dumps`: json.dumps options, e.g. indent=2)."""
    write_text(path, json.dumps(value, **dumps))


def write_table(path: str | Path, frame: pd.DataFrame) -> None:
    """Replace a CSV table whole (no index column)."""
    with replacing(path) as tmp:
        frame.to_csv(tmp, index=False)


def read_json(path: str | Path, remedy: str, keys: Sequence[str] = ()) -> Any:
    """A JSON file's value; DamagedFileError when it is not JSON, or not an object holding `keys`."""
    try:
        value = json.loads(Path(path).read_text(encoding="utf-8"))
    except (ValueError, OSError) as error:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise DamagedFileError(path, _problem(error, "not valid JSON"), remedy) from None
    if keys and not isinstance(value, dict):
        raise DamagedFileError(path, f"a JSON {type(value).__name__}, not an object", remedy)
    missing = [k for k in keys if k not in value]
    if missing:
        raise DamagedFileError(path, f"it lacks {', '.join(map(repr, missing))}", remedy)
    return value


def read_table(
    path: str | Path, remedy: str, complete: Sequence[str] = (), optional: Sequence[str] = (), **read_csv: Any
) -> pd.DataFrame:
    """A CSV table; DamagedFileError when it does not parse, when a column of `complete` is
    missing, or when one of `complete` or of the `optional` ones it has holds an empty cell (a
    row cut short). `read_csv`: pandas.read_csv options."""
    try:
        frame = pd.read_csv(path, **read_csv)
    except (ValueError, OSError) as error:  # pandas' parser errors are ValueErrors
        raise DamagedFileError(path, _problem(error, "not a CSV table"), remedy) from None
    missing = [c for c in complete if c not in frame.columns]
    if missing:
        raise DamagedFileError(path, f"it lacks the column(s) {', '.join(missing)}", remedy)
    cells = frame[[*complete, *(c for c in optional if c in frame.columns)]]
    short = frame.index[(cells.isna() | cells.astype(str).eq("")).any(axis=1)]
    if len(short):
        raise DamagedFileError(path, f"row {int(short[0]) + 2} is incomplete: cut short?", remedy)
    return frame


def check_archive(path: str | Path, remedy: str) -> None:
    """DamagedFileError unless the file is a whole zip archive whose members match their CRCs
    (torch.save writes one; torch.load itself checks no CRC)."""
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
    except (zipfile.BadZipFile, OSError, EOFError) as error:
        raise DamagedFileError(path, _problem(error, "cut short or overwritten"), remedy) from None
    if bad is not None:
        raise DamagedFileError(path, f"its member {bad} does not match its checksum", remedy)


def _problem(error: BaseException, what: str) -> str:
    """`what` with the error's own words, kept short."""
    detail = str(error).splitlines()[0][:120] if str(error) else type(error).__name__
    return f"{what}: {detail}"
