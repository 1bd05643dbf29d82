"""Client state beyond a memory budget on disk (federation.hot_clients): identical results."""

import pytest
import torch
from helpers import Killed, kill_after

from workbench.config import build_config
from workbench.core.errors import DamagedFileError
from workbench.loop import runner
from workbench.loop.checkpoint import CHECKPOINT_FILE
from workbench.loop.runner import run_experiment
from workbench.loop.store import SPILL_FOLDER, sha256


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


def resolved(saved: dict, folder) -> dict:
    """A checkpoint's client states, those it refers to read from their files (hash checked)."""
    states = dict(saved["clients"])
    for cid, ref in saved["spilled"].items():
        assert sha256(folder / ref["file"]) == ref["sha256"]
        states[cid] = torch.load(folder / ref["file"], weights_only=True)
    return states


@pytest.mark.slow  # six runs of the loop end to end
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
    folder = tmp_path / "h" / SPILL_FOLDER
    refs = saved[1]["spilled"]
    live = [cid for cid, s in saved[1]["clients"].items() if s]
    assert len(live) <= 2 and len(live) + len(refs) > 2  # more trained than are hot
    assert not saved[0]["spilled"] and not set(refs) & set(saved[1]["clients"])
    # the clients on disk are referred to, not copied, and the kill left only their files
    assert sorted(p.name for p in folder.iterdir()) == sorted(r["file"] for r in refs.values())
    assert (tmp_path / "h" / CHECKPOINT_FILE).stat().st_size < (
        tmp_path / "p" / CHECKPOINT_FILE
    ).stat().st_size
    assert same(saved[0]["clients"], resolved(saved[1], folder))
    for key in ("server", "algorithm", "ledger", "rows"):
        assert same(saved[0][key], saved[1][key]), key
    # resumed from round 1 and killed again after round 3: the checkpoint of round 2 refers
    # to files of its own, those only round 1's needed are gone, and it agrees with plain's
    for name, config in (("p", plain), ("h", hot)):
        with pytest.raises(Killed):
            run_experiment(config, out_dir=tmp_path / name, progress=kill_after(3))
    again = [torch.load(tmp_path / n / CHECKPOINT_FILE, weights_only=True) for n in ("p", "h")]
    assert again[1]["round"] == 2 and again[1]["spilled"]
    assert sorted(p.name for p in folder.iterdir()) == sorted(r["file"] for r in again[1]["spilled"].values())
    assert same(again[0]["clients"], resolved(again[1], folder))
    run_experiment(hot, out_dir=tmp_path / "h")  # resumes from round 2 with 2 hot clients
    assert (tmp_path / "h" / "results.csv").read_bytes() == csv
    assert not folder.exists() and not (tmp_path / "h" / CHECKPOINT_FILE).exists()  # cleaned up


@pytest.mark.slow  # two runs of the loop end to end
def test_a_changed_or_missing_client_file_is_named_before_any_round(tiny, tmp_path, monkeypatch):
    flat = {**tiny, **SMALL, "algorithm": "fedavg", "hot_clients": 2, "models": ("cnn1",)}
    config = build_config(flat)
    with pytest.raises(Killed):
        run_experiment(config, out_dir=tmp_path / "h", progress=kill_after(3))  # round 2's checkpoint
    ckpt = tmp_path / "h" / CHECKPOINT_FILE
    refs = sorted(r["file"] for r in torch.load(ckpt, weights_only=True)["spilled"].values())
    assert len(refs) >= 2
    changed, missing = (tmp_path / "h" / SPILL_FOLDER / name for name in refs[:2])
    original = changed.read_bytes()
    data = bytearray(original)
    data[len(data) // 2] ^= 1  # one bit
    changed.write_bytes(bytes(data))

    def no_round(*args, **kwargs):
        raise AssertionError("a round started")

    monkeypatch.setattr(runner, "run_round", no_round)
    with pytest.raises(DamagedFileError, match="SHA-256") as error:
        run_experiment(config, out_dir=tmp_path / "h")
    assert error.value.path == changed and f"rm {ckpt}" in str(error.value)
    changed.write_bytes(original)
    missing.unlink()
    with pytest.raises(DamagedFileError, match="missing") as error:
        run_experiment(config, out_dir=tmp_path / "h")
    assert error.value.path == missing and f"rm {ckpt}" in str(error.value)
    monkeypatch.undo()
    ckpt.unlink()  # what the message says to do: the run starts over and finishes
    run_experiment(config, out_dir=tmp_path / "h")
    assert not (tmp_path / "h" / SPILL_FOLDER).exists()


def test_hot_clients_default_keeps_everything_in_memory(tiny):
    assert build_config(tiny).federation.hot_clients == 0
