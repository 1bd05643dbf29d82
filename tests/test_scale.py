"""Cross-device scale: an evaluation panel (eval_clients) and data as indices into shared arrays."""

import torch

from workbench.config import build_config
from workbench.core.run_files import read_summary
from workbench.core.summary import format_summary
from workbench.loop.rounds import evaluation_panel, make_clients
from workbench.loop.runner import StopRun, run_experiment


def test_the_panel_is_seeded_the_same_every_round_and_the_last_round_evaluates_everyone(tiny):
    config = build_config({**tiny, "num_clients": 50, "rounds": 4, "eval_clients": 7})
    panel = evaluation_panel(config, 1)
    assert len(panel) == 7 == len(set(panel)) and panel == sorted(panel)
    assert evaluation_panel(config, 2) == evaluation_panel(config, 3) == panel
    assert evaluation_panel(config, 4) is None  # the last round: every client
    assert evaluation_panel(config.replace(seed=1), 1) != panel
    assert evaluation_panel(config.replace(eval_clients=0), 1) is None
    assert evaluation_panel(config.replace(eval_clients=50), 1) is None
    assert build_config(tiny).federation.eval_clients == 1000  # all clients up to 1,000


def test_a_panel_changes_no_final_number_and_the_summary_says_who_was_evaluated(tiny):
    flat = {**tiny, "algorithm": "fedavg", "num_clients": 5, "rounds": 2, "max_train_samples": 20}
    flat.update(batch_size=10, models=("cnn1",))
    whole = run_experiment(build_config(flat))
    panel = run_experiment(build_config({**flat, "eval_clients": 2}))
    first = panel.table[panel.table["round"] == 1]
    assert list(first["client"]) == evaluation_panel(build_config({**flat, "eval_clients": 2}), 1)
    last = [t[t["round"] == 2].reset_index(drop=True) for t in (whole.table, panel.table)]
    assert last[0]["accuracy"].equals(last[1]["accuracy"])  # training never depends on it
    for column in ("train_flops", "bytes_up", "bytes_down"):  # costs settle in later rows
        assert whole.table[column].sum() == panel.table[column].sum()
    assert panel.summary["final_accuracy"] == whole.summary["final_accuracy"]
    assert (panel.summary["panel_clients"], panel.summary["final_clients"]) == (2, 5)
    assert "panel_clients" not in whole.summary
    assert "a seeded panel of 2 clients in rounds before the last, all 5" in format_summary(panel.summary)
    for run in (whole, panel):  # the last round evaluated everyone: the final accuracy is all clients'
        assert (run.summary["final_round_clients"], run.summary["federation_clients"]) == (5, 5)
        assert "over a panel" not in format_summary(run.summary)


def test_a_run_stopped_before_its_last_round_says_its_final_accuracy_is_the_panels(tiny, tmp_path):
    flat = {**tiny, "algorithm": "fedavg", "num_clients": 5, "rounds": 3, "max_train_samples": 20}
    flat.update(batch_size=10, models=("cnn1",), eval_clients=2)

    def stop(round_, rounds, metrics):
        raise StopRun("hopeless")

    stopped = run_experiment(build_config(flat), out_dir=tmp_path / "r", progress=stop)
    assert set(stopped.table["round"]) == {1}
    assert (stopped.summary["final_round_clients"], stopped.summary["federation_clients"]) == (2, 5)
    text = format_summary(stopped.summary)
    assert "mean accuracy: final" in text and "over a panel of 2 of 5 clients" in text
    assert read_summary(tmp_path / "r") == stopped.summary  # written so, and read back so
    again = run_experiment(build_config(flat), out_dir=tmp_path / "r")  # the stored result
    assert again.summary == stopped.summary
    # a summary written before the keys existed says nothing of a panel
    old = {k: v for k, v in stopped.summary.items() if k not in ("final_round_clients", "federation_clients")}
    assert "over a panel" not in format_summary(old)


def test_clients_hold_indices_into_one_shared_copy_of_the_dataset(tiny):
    config = build_config({**tiny, "num_clients": 3, "val_fraction": 0.2})
    clients, _ = make_clients(config, torch.device("cpu"))
    shared = clients[0].data.images
    for c in clients:
        d = c.data
        assert d.images is shared and d.test_images is clients[0].data.test_images  # no copies
        assert torch.equal(d.train_x, shared[d.train_idx]) and d.num_train == len(d.train_idx) > 0
        assert d.num_val == len(d.val_idx) > 0 and not set(d.val_idx.tolist()) & set(d.train_idx.tolist())
        assert d.test_x.shape == (d.num_test, 3, 32, 32) and torch.equal(d.test_y, d.test_labels[d.test_idx])
