"""Client state beyond a memory budget on disk (federation.hot_clients): identical results."""

import pytest
import torch

from workbench.config import build_config
from workbench.loop.checkpoint import CHECKPOINT_FILE
from workbench.loop.runner import run_experiment
from workbench.loop.store import SPILL_FOLDER
from tests.test_checkpoint import Killed, kill_after

pytestmark = pytest.mark.slow  # each test runs the loop end to end, some twice


def same(a, b) -> bool:
    """Equal nested containers of tensors, bit for bit."""
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(map(same, a, b))
    return a == b or (a != a and b != b)  # NaN equals NaN here


@pytest.mark.parametrize("algorithm", ["fedlora", "fedkd", "fml", "fedproto"])
def test_two_hot_clients_give_what_all_in_memory_gives_and_resume_identically(tiny, tmp_path, algorithm):
    flat = {**tiny, "algorithm": algorithm, "num_clients": 6, "fraction": 0.5, "rounds": 4}
    flat.update(checkpoint_every=2, val_fraction=0.1, eval_every=1)
    plain, hot = build_config(flat), build_config({**flat, "hot_clients": 2})
    whole = run_experiment(plain, out_dir=tmp_path / "plain")
    spilled = run_experiment(hot, out_dir=tmp_path / "hot")
    csv = (tmp_path / "plain" / "results.csv").read_bytes()
    assert (tmp_path / "hot" / "results.csv").read_bytes() == csv
    assert not (tmp_path / "hot" / SPILL_FOLDER).exists()  # removed with the checkpoint
    assert spilled.table.equals(whole.table)
    # the checkpoints after round 2: the same clients' states whether live or on disk
    for name, config in (("p", plain), ("h", hot)):
        with pytest.raises(Killed):
            run_experiment(config, out_dir=tmp_path / name, progress=kill_after(3))
    saved = [torch.load(tmp_path / n / CHECKPOINT_FILE, weights_only=True) for n in ("p", "h")]
    assert saved[0]["config"] != saved[1]["config"]  # hot_clients differs, nothing else
    assert same(saved[0]["clients"], saved[1]["clients"])
    assert sum(bool(s) for s in saved[1]["clients"].values()) > 2  # more trained than are hot
    assert same(saved[0]["server"], saved[1]["server"])
    assert same(saved[0]["algorithm"], saved[1]["algorithm"])
    run_experiment(hot, out_dir=tmp_path / "h")
    assert (tmp_path / "h" / "results.csv").read_bytes() == csv


def test_hot_clients_default_keeps_everything_in_memory(tiny):
    assert build_config(tiny).federation.hot_clients == 0
