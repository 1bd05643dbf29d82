"""Diagnostics: optimizer steps per phase, update norms and FedLoRA's adapter contribution in
results.csv, and the warnings the CLI, the tuner and the notebook glue print from them."""

from __future__ import annotations

import contextlib
import io
import math

import pandas as pd
import pytest
import torch
from helpers import make_algorithm

from workbench.algorithms.fedlora import advice
from workbench.algorithms.fedlora.adapters import adapter_parameters, adapter_sites, adapter_state
from workbench.algorithms.fedlora.probe import effective_weight_norm
from workbench.cli import main
from workbench.config import build_config
from workbench.core import diagnostics
from workbench.core.accounting import EvaluationRecord, Ledger
from workbench.core.results import Evaluation, Row, to_frame
from workbench.core.run_files import read_run
from workbench.core.training import PhaseStats
from workbench.lab.tuner.runs import Curve
from workbench.lab.tuner.tuner import describe, diagnostics_html
from workbench.loop.rounds import evaluate_client, run_round

# many clients with a few dozen samples each, the adapter as LoRA starts it (B = 0, one rate:
# the defaults before the issue-21 study), which stays inert
STARVED = {
    "adapter_init": "lora",
    "lora_plus_ratio": 1.0,
    "dataset": "digits",
    "num_clients": 40,
    "fraction": 0.25,
    "rounds": 2,
    "batch_size": 32,
    "model_epochs": 2,
    "adapter_epochs": 1,
    "eval_batch_size": 256,
    "device": "cpu",
}


@pytest.fixture(scope="module")
def starved(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[str], pd.DataFrame]:
    """The CLI's output lines and the results table of a starved FedLoRA run."""
    out = tmp_path_factory.mktemp("starved") / "run"
    flags = [f"--{k}={v}" for k, v in STARVED.items()]
    buffer = io.StringIO()  # module scope: capsys is per test
    with contextlib.redirect_stdout(buffer):
        assert main(["run", *flags, "--out", str(out)]) == 0
    return buffer.getvalue().splitlines(), read_run(out)[1]


def test_a_fedlora_table_records_steps_per_phase_update_norms_and_the_adapter(starved):
    _, table = starved
    for column in ("local_rounds", "local_steps", "steps_model", "steps_adapter", "update_norm"):
        assert column in table, column
    assert {"adapter_contribution", "adapter_weight_norm"} <= set(table.columns)
    batches = (table["num_train"] / STARVED["batch_size"]).apply(math.ceil)  # ceil(n / batch)
    assert (table["steps_model"] == table["local_rounds"] * batches * STARVED["model_epochs"]).all()
    assert (table["steps_adapter"] == table["local_rounds"] * batches * STARVED["adapter_epochs"]).all()
    assert (table["local_steps"] == table["steps_model"] + table["steps_adapter"]).all()
    idle = table[table["local_rounds"] == 0]
    assert len(idle) and idle["update_norm"].isna().all() and (idle["local_steps"] == 0).all()
    assert (table.loc[table["local_rounds"] > 0, "update_norm"] > 0).all()


def test_the_adapter_contributes_nothing_before_it_trains_and_something_after(starved):
    _, table = starved
    first = table[table["round"] == 1]
    never = first[~first["participated"]]  # set up from the seed: B = 0
    assert len(never) and (never["adapter_contribution"] == 0).all()
    assert (never["adapter_weight_norm"] == 0).all()
    trained = first[first["participated"]]
    assert (trained["adapter_contribution"] > 0).all() and (trained["adapter_weight_norm"] > 0).all()


def test_the_cli_ends_with_both_warnings_naming_what_to_change(starved):
    lines, table = starved
    assert lines[-3].startswith("run directory: ")
    inert, starving = lines[-2:]
    assert inert.startswith("WARNING: adapter inert") and "adapter_lr" in inert and "adapter_epochs" in inert
    assert "adapter_init=small_b" in inert and "lora_plus_ratio" in inert
    assert f"below {advice.MIN_CONTRIBUTION:.0%}" in inert
    assert starving.startswith("WARNING: undertrained") and "model_epochs" in starving
    assert "model: 2, adapter: 1" in starving and "batch_size" in starving
    assert any(line.startswith("round 2/2: mean accuracy") and "steps/round" in line for line in lines)


def test_the_tuner_shows_the_diagnostics_line_and_the_warnings(starved):
    _, table = starved
    curve = Curve.from_table(build_config(STARVED), table)
    assert curve.diagnostics.startswith("adapter ") and "steps/round model 2, adapter 1" in curve.diagnostics
    shown = diagnostics_html(curve)
    assert "diagnostics: adapter" in shown and shown.count("workbench-tuner-warning") == 2
    assert "adapter inert" in shown and "⚠ 2 warning(s)" in describe(curve)


def test_update_norm_is_the_distance_the_upload_moved_from_the_download():
    algorithm, clients = make_algorithm(algorithm="fedlora", num_clients=2, adapter_lr=0.1)
    theta = algorithm.initial_server_state()
    ledger = Ledger()
    run_round(algorithm, clients, theta, 1, ledger)
    for client in clients:
        upload = adapter_state(client.state["model"])
        expected = math.sqrt(sum(float(((upload[n].double() - theta[n].double()) ** 2).sum()) for n in theta))
        evaluated = EvaluationRecord(client.cid, client.model_name, "fedlora", Evaluation(0.0, 0.0, {}), 1, 1)
        row = ledger.row(1, evaluated)
        assert row.update_norm == pytest.approx(expected, rel=1e-12) and expected > 0
        assert row.phase_steps == {"model": 3, "adapter": 3} and row.local_rounds == 1  # 40 samples, batch 16


def test_an_upload_that_is_not_a_state_is_measured_as_it_is_and_nothing_sent_is_empty():
    fd, (client,) = make_algorithm(algorithm="fd", num_clients=1)
    table = {"logits": torch.tensor([[3.0, 4.0]]), "counts": torch.tensor([5])}  # counts: not floating
    assert fd.update_norm(client, table, {}) == 5.0
    alone, (solo,) = make_algorithm(algorithm="standalone", num_clients=1)
    assert math.isnan(alone.update_norm(solo, {}, {}))


@pytest.mark.parametrize(
    "placement,targets,models",
    [
        ("head", "head", "cnn1,cnn2"),
        ("fc2", "head", "cnn1,cnn2"),
        ("parallel", "head", "cnn1"),
        ("parallel_logits", "head", "cnn1"),
        ("head", "fc2,head", "cnn1"),
    ],
)
def test_the_probe_returns_the_models_own_logits_and_measures_at_the_placements_output(
    placement, targets, models
):
    algorithm, clients = make_algorithm(
        algorithm="fedlora",
        adapter_placement=placement,
        lora_targets=targets,
        models=models,
        num_clients=2,
        adapter_init="lora",  # B = 0 at the start
    )
    x = torch.randn(6, 3, 32, 32)
    for client in clients:
        model = client.state["model"].eval()
        assert evaluate_client(algorithm, client)[2]["adapter_contribution"] == 0.0  # B = 0
        g = torch.Generator().manual_seed(client.cid)
        with torch.no_grad():
            for name, p in adapter_parameters(model).items():
                if name.endswith("lora_B"):
                    p.copy_(torch.randn(p.shape, generator=g) * 0.05)
            logits, without, added = algorithm.placement.site_outputs(model, x)
            assert torch.equal(logits, model(x))  # evaluation results do not change
        assert float(added.norm()) > 0 and evaluate_client(algorithm, client)[2]["adapter_contribution"] > 0


def test_contribution_and_weight_norm_match_a_hand_computation_for_the_head():
    algorithm, (client,) = make_algorithm(
        algorithm="fedlora", num_clients=1, rank=2, lora_alpha=6.0, use_rslora=False
    )
    model = client.state["model"].eval()
    head = adapter_sites(model)["head"].module
    a, b = head.lora_A["default"].weight, head.lora_B["default"].weight  # r×500, C×r
    with torch.no_grad():
        b.copy_(torch.randn(b.shape, generator=torch.Generator().manual_seed(3)))
    scale = 6.0 / 2
    with torch.no_grad():
        by_hand = float(torch.linalg.norm(scale * b @ a))
    assert effective_weight_norm(model) == pytest.approx(by_hand, rel=1e-6)
    x = torch.randn(5, 3, 32, 32)
    with torch.no_grad():
        z = model.features(x)
        base = z @ head.base_layer.weight.T + head.base_layer.bias  # 5, C
        delta = scale * z @ a.T @ b.T  # 5, C
        _, without, added = algorithm.placement.site_outputs(model, x)
    assert float(added.norm() / without.norm()) == pytest.approx(float(delta.norm() / base.norm()), rel=1e-4)


def test_phase_steps_add_up_across_phases():
    first = PhaseStats(flops=1, steps=3, mean_loss=0.5, phase_steps={"model": 3})
    both = first.then(PhaseStats(flops=2, steps=2, mean_loss=0.25, phase_steps={"adapter": 2}))
    assert both.phase_steps == {"model": 3, "adapter": 2} and both.steps == 5
    assert both.then(first).phase_steps == {"model": 6, "adapter": 2}
    assert both.plus_flops(4).phase_steps == both.phase_steps


def row(round_: int, cid: int, contribution: float | None, steps: int, rounds: int = 1) -> Row:
    """A synthetic table row: FedLoRA-like when a contribution is given."""
    return Row(
        round=round_,
        client=cid,
        model="cnn1",
        algorithm="fedlora" if contribution is not None else "standalone",
        participated=rounds > 0,
        accuracy=0.5,
        loss=1.0,
        train_loss=1.0,
        train_flops=1,
        bytes_up=0,
        bytes_down=0,
        num_train=100,
        num_test=10,
        local_rounds=rounds,
        local_steps=steps * rounds,
        phase_steps={"model": steps * rounds},
        diagnostics={} if contribution is None else {"adapter_contribution": contribution},
    )


def test_warnings_follow_the_thresholds_defined_once():
    low, steps = advice.MIN_CONTRIBUTION, diagnostics.MIN_STEPS
    alive = to_frame([row(1, 0, 0.0, steps), row(2, 0, low, steps), row(2, 1, low, steps, rounds=0)])
    assert diagnostics.run_warnings(alive) == []
    inert = to_frame([row(1, 0, low / 2, steps), row(2, 0, low * 0.9, steps)])
    assert [w.split(":")[0] for w in diagnostics.run_warnings(inert)] == ["adapter inert"]
    starved = to_frame([row(1, 0, None, steps - 1), row(2, 0, None, steps - 1)])
    (warning,) = diagnostics.run_warnings(starved)
    assert warning.startswith("undertrained") and f"model: {steps - 1}" in warning
    # every 2nd round evaluated: steps are per round the client trained in, not per row
    assert diagnostics.run_warnings(to_frame([row(2, 0, None, steps, rounds=2)])) == []


def test_an_undeclared_diagnostic_is_refused_and_old_tables_raise_no_warning():
    bad = Row(**{**row(1, 0, None, 1).__dict__, "diagnostics": {"accuracy": 1.0}})
    with pytest.raises(ValueError, match=r"not declared in workbench.core.diagnostics"):
        to_frame([bad])
    old = to_frame([row(1, 0, None, 1)]).drop(columns=["local_rounds", "local_steps", "steps_model"])
    assert diagnostics.run_warnings(old) == [] and diagnostics.brief(old) == ""


def frame_of(rounds: list[dict]) -> pd.DataFrame:
    """A two-client FedLoRA table, one dict of column values per evaluated round."""
    rows = []
    for round_, values in enumerate(rounds, start=1):
        for cid in (0, 1):
            rows.append(row(round_, cid, values.get("contribution", 0.1), diagnostics.MIN_STEPS))
    table = to_frame(rows)
    for column in ("train_loss", "accuracy", "update_norm"):
        if any(column in values for values in rounds):
            table[column] = [values.get(column, 1.0) for values in rounds for _ in (0, 1)]
    return table


def names(table: pd.DataFrame) -> list[str]:
    return [w.split(":")[0] for w in diagnostics.run_warnings(table)]


def test_an_adapter_above_the_threshold_dominates_and_the_warning_names_the_knobs():
    top = advice.MAX_CONTRIBUTION
    assert names(frame_of([{"contribution": top * 0.9}, {"contribution": top}])) == []
    assert names(frame_of([{"contribution": top * 50}, {"contribution": 0.2}])) == []  # an early spike
    (warning,) = diagnostics.run_warnings(frame_of([{"contribution": 0.2}, {"contribution": top * 1.5}]))
    assert warning.startswith("adapter dominates") and "in round 2" in warning and f"{top:.0%}" in warning
    assert "lora_plus_ratio" in warning and "lora_alpha" in warning


def test_a_run_is_unstable_when_values_stop_being_finite_the_loss_rises_or_accuracy_collapses():
    healthy = frame_of([{"train_loss": 1.0, "accuracy": 0.5}, {"train_loss": 0.5, "accuracy": 0.8}])
    assert names(healthy) == []
    broken = frame_of([{"contribution": 0.2}, {"contribution": math.inf}])
    (warning,) = diagnostics.run_warnings(broken)
    assert warning.startswith("unstable: adapter_contribution is not finite from round 2")
    assert "lora_plus_ratio" in warning and "max_grad_norm" in warning
    rise = diagnostics.LOSS_RISE
    rising = frame_of([{"train_loss": 0.5}, {"train_loss": 0.4}, {"train_loss": 0.4 * rise * 1.1}])
    (warning,) = diagnostics.run_warnings(rising)
    assert warning.startswith("unstable: the clients' mean training loss rose") and "round 2" in warning
    assert names(frame_of([{"train_loss": 0.5}, {"train_loss": 0.4 * rise * 0.99}])) == []
    near_zero = [{"train_loss": 0.8}, {"train_loss": 0.08}, {"train_loss": 0.17}]  # the demo's seed 2
    assert names(frame_of(near_zero)) == []  # 2.1× its lowest, but 12% of its fall given back
    back = diagnostics.LOSS_GIVEBACK
    halfway = 0.08 + back * 1.1 * (0.8 - 0.08)
    (warning,) = diagnostics.run_warnings(frame_of([*near_zero[:2], {"train_loss": halfway}]))
    assert f"{back:.0%} of the way back to round 1's 0.8" in warning
    drop = diagnostics.COLLAPSE
    collapsed = frame_of([{"accuracy": 0.9}, {"accuracy": 0.9 - drop - 0.01}])
    (warning,) = diagnostics.run_warnings(collapsed)
    assert warning.startswith("unstable: mean accuracy collapsed") and "best (90.0%, round 1)" in warning
    assert names(frame_of([{"accuracy": 0.9}, {"accuracy": 0.9 - drop + 0.01}])) == []
    baseline = to_frame([row(1, 0, None, 10), row(2, 0, None, 10)])
    baseline["train_loss"] = [1.0, 5.0]
    (warning,) = diagnostics.run_warnings(baseline)  # a method without an adapter: the shared rates
    assert warning.startswith("unstable") and "lora_plus_ratio" not in warning and "lr" in warning


def test_a_panel_round_is_compared_with_the_same_clients_of_the_last_round():
    """eval_clients: round 1 evaluated clients 0-1 (a panel), round 2 all four; two never
    trained, so the whole federation's mean is far below the panel's without any collapse."""
    rows = [row(1, cid, None, diagnostics.MIN_STEPS) for cid in (0, 1)]
    rows += [row(2, cid, None, diagnostics.MIN_STEPS) for cid in (0, 1, 2, 3)]
    table = to_frame(rows)
    table["accuracy"] = [0.9, 0.9, 0.9, 0.9, 0.1, 0.1]  # panel kept its 90%; 2 and 3 untrained
    assert names(table) == []
    table["accuracy"] = [0.9, 0.9, 0.5, 0.5, 0.1, 0.1]  # the panel itself fell 40 points
    (warning,) = diagnostics.run_warnings(table)
    assert warning.startswith(
        "unstable: mean accuracy of the 2 clients evaluated every round collapsed to 50.0%"
    )


@pytest.mark.slow
def test_the_cli_prints_the_new_warning_for_a_run_made_to_go_wrong(tmp_path, capsys):
    """Rank 1 with LoRA+ 64 and 2 adapter epochs (the issue's check), on a small federation."""
    flags = ["--num_clients=4", "--rounds=3", "--rank=1", "--lora_plus_ratio=64", "--adapter_epochs=2"]
    code = main(["run", *flags, "--device=cpu", "--out", str(tmp_path / "run")])  # 2: stopped
    out = capsys.readouterr()
    lines = (out.out + out.err).splitlines()
    warned = [line for line in lines if line.startswith("WARNING: ")]
    assert any(w.startswith(("WARNING: unstable", "WARNING: adapter dominates")) for w in warned), lines
    assert code in (0, 2)


def test_core_reads_methods_diagnostics_only_from_the_registry_and_says_so_without_it():
    import subprocess
    import sys

    code = (
        "from workbench.core import diagnostics\n"
        "try:\n    diagnostics.declared()\nexcept RuntimeError as e:\n    print(e)\n"
        "import workbench.algorithms\n"
        "print(sorted(diagnostics.DIAGNOSTICS))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "import workbench.algorithms (the registry)" in out.splitlines()[0]
    assert out.splitlines()[1] == "['adapter_contribution', 'adapter_weight_norm']"
