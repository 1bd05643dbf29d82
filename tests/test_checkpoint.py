import pandas as pd
import pytest
from helpers import Killed, kill_after

from workbench.config import build_config
from workbench.core.errors import UserError
from workbench.loop.checkpoint import CHECKPOINT_FILE
from workbench.loop.runner import run_experiment

pytestmark = pytest.mark.slow  # each test runs the loop end to end, some twice


def test_killed_run_resumes_from_its_checkpoint_with_identical_numbers(tiny, tmp_path):
    config = build_config({**tiny, "rounds": 4, "checkpoint_every": 2, "fraction": 0.5})
    whole = run_experiment(config, out_dir=tmp_path / "whole")
    with pytest.raises(Killed):
        run_experiment(config, out_dir=tmp_path / "resumed", progress=kill_after(3))
    assert (tmp_path / "resumed" / CHECKPOINT_FILE).exists()
    seen = []
    resumed = run_experiment(config, out_dir=tmp_path / "resumed", progress=lambda r, *_: seen.append(r))
    assert seen == [3, 4]  # rounds 1-2 came from the checkpoint
    pd.testing.assert_frame_equal(resumed.table, whole.table)
    assert not (tmp_path / "resumed" / CHECKPOINT_FILE).exists()


def test_finished_run_directory_is_reused_and_never_overwritten_by_other_parameters(tiny, tmp_path):
    config = build_config(tiny)
    first = run_experiment(config, out_dir=tmp_path / "run")
    again = run_experiment(config, out_dir=tmp_path / "run", progress=lambda *_: pytest.fail("re-ran"))
    pd.testing.assert_frame_equal(again.table, first.table, check_dtype=False)
    before = (tmp_path / "run" / "results.csv").read_bytes()
    with pytest.raises(
        UserError,
        match=r"other parameters \(rank: 4 there, 2 here\); choose "
        r"another output folder",
    ):
        run_experiment(config.replace(rank=2), out_dir=tmp_path / "run")
    assert (tmp_path / "run" / "results.csv").read_bytes() == before


def test_checkpoint_of_other_parameters_is_refused(tiny, tmp_path):
    config = build_config({**tiny, "rounds": 3, "checkpoint_every": 1})
    with pytest.raises(Killed):
        run_experiment(config, out_dir=tmp_path / "r", progress=kill_after(2))
    with pytest.raises(UserError, match=r"other parameters \(mu: 0.5 there, 0.1 here\)"):
        run_experiment(config.replace(mu=0.1), out_dir=tmp_path / "r")


@pytest.mark.parametrize(
    "method",
    [
        {"algorithm": "fedlora"},
        {"algorithm": "fedavg", "fedavg_model": "resnet8_w8"},
        {"algorithm": "fedlora", "models": "vit", "adapter_placement": "attention"},
    ],
)
def test_mixed_group_resumes_bit_identically_with_private_batchnorm(tiny, tmp_path, method):
    """A ResNet's BatchNorm statistics and a ViT's attention adapter survive the checkpoint."""
    flat = {**tiny, "models": "mixed", "num_clients": 3, "max_train_samples": 24, **method}
    config = build_config({**flat, "rounds": 3, "checkpoint_every": 1, "fraction": 0.67})
    whole = run_experiment(config, out_dir=tmp_path / "whole")
    with pytest.raises(Killed):
        run_experiment(config, out_dir=tmp_path / "resumed", progress=kill_after(2))
    resumed = run_experiment(config, out_dir=tmp_path / "resumed")
    pd.testing.assert_frame_equal(resumed.table, whole.table, check_exact=True)
