"""Client state beyond a memory budget on disk (federation.hot_clients): identical results."""

import pytest
import torch
from test_checkpoint import Killed, kill_after

from workbench.config import build_config
from workbench.loop.checkpoint import CHECKPOINT_FILE
from workbench.loop.runner import run_experiment


def same(a, b) -> bool:
    """Equal nested containers of tensors, bit for bit."""
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(map(same, a, b))
    return a == b or (a != a and b != b)  # NaN equals NaN here


# 6 clients, 3 sampled a round, 20 training images each in batches of 10: spilling starts in round 1
SMALL = dict(num_clients=6, fraction=0.5, rounds=3, checkpoint_every=1, max_train_samples=20, batch_size=10)


@pytest.mark.slow  # four runs of the loop end to end
@pytest.mark.parametrize("algorithm", ["fedlora"])
def test_two_hot_clients_give_what_all_in_memory_gives_and_resume_identically(tiny, tmp_path, algorithm):
    flat = {**tiny, **SMALL, "algorithm": algorithm, "model_epochs": 1, "adapter_epochs": 1}
    flat["models"] = ("cnn1", "cnn2")  # two architectures: few FLOP counts
    plain, hot = build_config(flat), build_config({**flat, "hot_clients": 2})
    run_experiment(plain, out_dir=tmp_path / "plain")
    csv = (tmp_path / "plain" / "results.csv").read_bytes()
    # killed after round 2's evaluation: the checkpoints of round 1, live or on disk, agree
    for name, config in (("p", plain), ("h", hot)):
        with pytest.raises(Killed):
            run_experiment(config, out_dir=tmp_path / name, progress=kill_after(2))
    saved = [torch.load(tmp_path / n / CHECKPOINT_FILE, weights_only=True) for n in ("p", "h")]
    assert {k for k in saved[0]["config"] if saved[0]["config"][k] != saved[1]["config"][k]} == {
        "hot_clients"
    }
    assert sum(bool(s) for s in saved[1]["clients"].values()) > 2  # more trained than are hot
    for key in ("clients", "server", "algorithm", "ledger", "rows"):
        assert same(saved[0][key], saved[1][key]), key
    run_experiment(hot, out_dir=tmp_path / "h")  # resumes from round 1 with 2 hot clients
    assert (tmp_path / "h" / "results.csv").read_bytes() == csv


def test_hot_clients_default_keeps_everything_in_memory(tiny):
    assert build_config(tiny).federation.hot_clients == 0
