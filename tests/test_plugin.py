"""A method defined here, in one test file, runs everywhere a built-in does: no project file edited."""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest
import torch.nn.functional as F

from workbench.algorithms import REGISTRY, Client, Knob, KnobGrid, method_parameters, register, unregister
from workbench.algorithms.standalone import Standalone
from workbench.cli import main
from workbench.config import ConfigError, build_config, defaults, parameter_table
from workbench.core.diagnostics import Diagnostic, Finding, MethodDiagnostics, per_round
from workbench.core.params import Search, Section, param
from workbench.core.results import ROW_COLUMNS, Row, to_frame
from workbench.core.run_files import read_run
from workbench.core.training import Probe
from workbench.lab import notebook
from workbench.loop.runner import run_experiment


@dataclass(frozen=True)
class SmoothParams(Section):
    prefix = "smooth_"
    eps: float = param(0.1, "label smoothing of the local CE", ge=0, lt=1)


class SmoothStandalone(Standalone):
    """Standalone with label-smoothed cross-entropy."""

    name = "smooth"
    title = "Smoothed Standalone"
    Params = SmoothParams
    kernel_imports = ("scipy.stats",)  # any module its experiments would import late
    heatmap = KnobGrid(Knob("smooth_eps", "ε", "label smoothing ε"), Knob("lr", "η"))
    search = {"smooth_eps": Search(0.0, 0.3)}  # what `tune` searches for it

    def local_update(self, client: Client, generator):
        model, eps = client.state["model"], self.params.eps
        loss = lambda x, y: F.cross_entropy(model(x), y, label_smoothing=eps)
        return self.phase(
            client, [model], loss, generator, self.config.train.model_epochs, self.model_sgd(), "model"
        )


@pytest.fixture
def smooth():
    register(SmoothStandalone)
    yield SmoothStandalone
    unregister("smooth")


@pytest.mark.slow
def test_a_registered_method_runs_through_run_experiment(smooth, tiny):
    config = build_config({**tiny, "algorithm": "smooth", "smooth_eps": 0.2})
    assert config.params_of("smooth").eps == 0.2 and method_parameters("smooth") == ["smooth_eps"]
    result = run_experiment(config)
    assert set(result.table["algorithm"]) == {"smooth"}
    assert (result.table["bytes_up"] == 0).all() and (result.table["train_flops"] > 0).all()
    plain = run_experiment(build_config({**tiny, "algorithm": "smooth", "smooth_eps": 0.0}))
    assert not plain.table["train_loss"].equals(result.table["train_loss"])  # the knob acts


def test_its_knob_is_validated_and_listed(smooth):
    assert "smooth_eps" in parameter_table() and defaults()["smooth_eps"] == 0.1
    with pytest.raises(ConfigError, match=r"smooth_eps=1\.5 is out of range: must be < 1"):
        build_config({"algorithm": "smooth", "smooth_eps": 1.5})
    with pytest.raises(ConfigError, match="did you mean 'smooth_eps'"):
        build_config({"algorithm": "smooth", "smooth_epss": 0.1})
    assert "smooth_eps: float = 0.1  # label smoothing of the local CE" in notebook.parameters_source()


@pytest.mark.slow
def test_the_cli_parses_and_refuses_its_knob(smooth, tiny, tmp_path, capsys):
    args = [f"--{k}={v}" for k, v in tiny.items()]
    assert (
        main(["run", *args, "--algorithm", "smooth", "--smooth_eps", "2", "--out", str(tmp_path / "bad")])
        == 2
    )
    assert "smooth_eps=2.0 is out of range" in capsys.readouterr().err
    assert (
        main(
            [
                "run",
                *args,
                "--algorithm",
                "smooth",
                "--smooth_eps",
                "0.05",
                "--quiet",
                "--out",
                str(tmp_path / "ok"),
            ]
        )
        == 0
    )
    flat, table = read_run(tmp_path / "ok")
    assert flat["smooth_eps"] == 0.05 and set(table["algorithm"]) == {"smooth"}


def test_the_notebook_collects_it_strictly(smooth, tiny):
    namespace = {**tiny, "algorithm": "smooth", "smooth_eps": 0.3, "interactive": False}
    config, _ = notebook.collect(namespace, set())
    assert config.params_of("smooth").eps == 0.3
    with pytest.raises(ConfigError, match="smooth_eps"):
        notebook.collect({**namespace, "smooth_eps": -1.0}, set())


def test_names_must_be_new_and_well_formed(smooth):
    class Clash(Standalone):
        name = "smooth"

    with pytest.raises(ValueError, match="already registered"):
        register(Clash)

    class Shouting(Standalone):
        name = "Loud"

    with pytest.raises(ValueError, match="lower_snake_case"):
        register(Shouting)
    assert REGISTRY["smooth"] is SmoothStandalone


def test_a_knob_name_clash_is_refused_naming_both_sections(smooth):
    @dataclass(frozen=True)
    class Clashing(Section):
        rank: int = param(1, "clashes with FedLoRA's rank")

    class Other(Standalone):
        name = "other"
        Params = Clashing

    register(Other)
    try:
        with pytest.raises(ConfigError, match="'rank' is declared by both FedLoRAParams and Clashing"):
            build_config({})
    finally:
        unregister("other")


def test_derived_lists_follow_the_registry():
    from workbench.flower.settings import app_config_lines

    app = Path(__file__).resolve().parents[1] / "workbench" / "flower" / "app" / "pyproject.toml"
    committed = app.read_text().split("[tool.flwr.app.config]\n", 1)[1].splitlines()
    assert committed == app_config_lines()  # regenerate with app_config_lines() after a change
    for name in REGISTRY:
        assert all(p in parameter_table() for p in method_parameters(name))


def test_a_help_text_papermill_cannot_read_is_refused_where_it_is_written():
    with pytest.raises(ValueError, match="may not contain '='"):
        param(1, "x=1 sets it")


def synthetic_sweep_table() -> pd.DataFrame:
    """Tidy results of a sweep over smooth_eps × lr (2 seeds) beside Standalone, no training:
    final mean accuracy 0.6 + eps + lr (+0.01 per seed); Standalone 0.6 (+0.01 per seed)."""
    rows = []
    points = [("smooth", e, lr) for e in (0.0, 0.2) for lr in (0.05, 0.1)] + [("standalone", None, None)]
    for (algorithm, eps, lr), seed, round_ in itertools.product(points, (0, 1), (1, 2)):
        final = 0.6 + (eps or 0.0) + (lr or 0.0) + 0.01 * seed
        point = f"{algorithm}-{eps}-{lr}-{seed}"
        for client in (0, 1):
            rows.append(
                {
                    **dict.fromkeys(ROW_COLUMNS, 0),
                    "round": round_,
                    "client": client,
                    "model": "cnn1",
                    "algorithm": algorithm,
                    "participated": True,
                    "accuracy": final - 0.1 * (2 - round_),
                    "val_accuracy": float("nan"),  # no validation split: selected on test
                    "train_flops": 100,
                    **{"point": point, "seed": seed, "smooth_eps": eps, "lr": lr},
                }
            )
    return pd.DataFrame(rows)


def test_its_declared_traits_get_the_built_in_treatment(smooth):
    from workbench.lab.report import heatmaps, sweep_tables, verdict
    from workbench.lab.report.html_tables import accuracy_rows
    from workbench.lab.sweep.warm_kernels import BASE_IMPORTS, warm_imports

    assert warm_imports([{"algorithm": "smooth", "dataset": "cifar10"}]) == (*BASE_IMPORTS, "scipy.stats")
    both = warm_imports([{"algorithm": "standalone", "compare": "smooth,fedlora", "dataset": "cifar10"}])
    assert both == (*BASE_IMPORTS, "peft", "scipy.stats")  # registry order, each module once
    table = synthetic_sweep_table()
    summary = sweep_tables.point_summary(table, ["algorithm", "smooth_eps", "lr", "seed"])
    configs = sweep_tables.configurations(summary, "smooth")
    assert configs["algorithm"].iloc[0] == "smooth"  # the reference method's configurations first
    assert heatmaps.knob_grids(summary) == {"smooth": SmoothStandalone.heatmap}
    assert heatmaps.knob_heading("smooth", SmoothStandalone.heatmap).startswith(
        "## Smoothed Standalone: ε × η"
    )
    fig = heatmaps.knob_heatmap(summary, "smooth")
    assert fig.layout.title.text.startswith(
        "Smoothed Standalone final mean accuracy over ε × η (mean of 2 seeds"
    )
    assert (fig.layout.xaxis.title.text, fig.layout.yaxis.title.text) == ("η", "label smoothing ε")
    assert list(fig.data[0].y) == ["0", "0.2"] and list(fig.data[0].x) == ["0.05", "0.1"]
    assert fig.data[0].z[1][1] == pytest.approx(0.6 + 0.2 + 0.1 + 0.005)
    curves = sweep_tables.seed_curves(table)
    found = verdict.decide(summary, configs, curves, "digits", reference="smooth")
    best = "smooth · smooth_eps=0.2 · lr=0.1"
    assert [c.other for c in found.comparisons] == ["standalone"]  # no rival (fedproto) in this sweep
    assert found.sentence.startswith(
        f"At this setting (digits), Smoothed Standalone wins on final accuracy: Smoothed Standalone's "
        f"best configuration ({best}) beats the best baseline (standalone), difference +30.0 points"
    )
    assert accuracy_rows(found, configs).loc[0, "Smoothed Standalone configuration"] == best
    unregister("smooth")  # a report kernel that never registered it: no grid, with a note
    assert heatmaps.knob_grids(summary) == {}
    assert heatmaps.grid_note(summary).startswith("Not registered in this report's kernel: smooth;")


def test_tune_searches_its_declared_range_and_checks_overrides_against_its_bounds(smooth):
    from workbench.lab.tuning.spec import load_tune_spec, search_space

    spec = {"parameters": {"dataset": "digits"}, "methods": ["smooth"]}
    assert search_space(load_tune_spec(spec))["smooth"] == {"smooth_eps": Search(0.0, 0.3)}
    bad = {**spec, "ranges": {"smooth": {"smooth_eps": {"low": 0.1, "high": 1.0}}}}
    with pytest.raises(ConfigError, match=r"method smooth: knob 'smooth_eps'.*must be < 1"):
        search_space(load_tune_spec(bad))


# ---- facts a method owns: its seed purposes and its diagnostics, declared in its own module ----
CONFIDENCE = "smooth_confidence"


class ConfidenceProbe(Probe):
    """The deployed logits; on the way, the mean top-class probability over the test split."""

    def __init__(self, predict) -> None:
        super().__init__(predict)
        self.total, self.count = 0.0, 0

    def __call__(self, x):
        logits = self.predict(x)
        self.total += float(logits.softmax(1).max(1).values.sum())
        self.count += len(x)
        return logits

    def values(self) -> dict[str, float]:
        return {CONFIDENCE: self.total / self.count}


def overconfident(frame: pd.DataFrame) -> list[Finding]:
    """Its own warning: the mean confidence of the last evaluated round above 0.99."""
    last = per_round(frame, CONFIDENCE)
    if len(last) and 0.99 < last.iloc[-1] < math.inf:
        return [Finding(f"overconfident: {last.iloc[-1]:.1%}; raise smooth_eps", serious=False)]
    return []


class ConfidentSmooth(SmoothStandalone):
    """The smoothed method measuring its own diagnostic and drawing its own seed."""

    name = "confident"
    seed_purposes = {"smooth_shuffle": 40}
    diagnostics = MethodDiagnostics(
        columns=(Diagnostic(CONFIDENCE, "mean top-class probability", finite=True, brief="conf {:.0%}"),),
        findings=overconfident,
        phase_knobs={"model": "smooth_eps (or model_epochs)"},
        step_knobs="smooth_eps",
    )

    def evaluation_probe(self, client: Client) -> Probe:
        return ConfidenceProbe(lambda x: self.predict(client, x))


@pytest.fixture
def confident():
    register(ConfidentSmooth)
    yield ConfidentSmooth
    unregister("confident")


def test_the_built_in_seed_purposes_keep_their_numbers():
    from workbench.algorithms import seed_purposes
    from workbench.core.facts import Seed

    generic = {"client_model": 1, "batches": 3, "attack": 6, "sampling": 7, "subsample": 8}
    generic |= {"validation": 9, "dropout": 10, "devices": 11, "dp_noise": 12, "evaluation": 13}
    assert {p.name.lower(): int(p) for p in Seed} == generic  # results depend on every number
    assert seed_purposes() == {**generic, "adapter": 2, "shared_model": 4, "server_head": 5}
    assert REGISTRY["fml"].seed_purposes == REGISTRY["fedkd"].seed_purposes == {"shared_model": 4}


@pytest.mark.parametrize(
    ("purposes", "message"),
    [
        ({"init": 2}, r"confident's seed purpose 'init' = 2 clashes with fedlora's 'adapter' = 2"),
        ({"shared_model": 70}, r"'shared_model' = 70 clashes with fedavg's 'shared_model' = 4"),
        ({"shuffle": 3}, r"'shuffle' = 3 clashes with the generic purpose Seed.BATCHES = 3"),
        ({"batches": 30}, r"'batches' = 30 clashes with the generic purpose Seed.BATCHES = 3"),
        ({"a": 30, "b": 30}, r"declares seed purpose 30 twice \('a' and 'b'\); the next free number is 14"),
        ({"a": 0}, r"'a' = 0 must be an int >= 1"),
        ({"A": 30}, r"seed purpose 'A' must be a lower_snake_case name"),
    ],
)
def test_a_seed_purpose_that_clashes_is_refused_at_registration_naming_both(purposes, message):
    clashing = type("Clashing", (ConfidentSmooth,), {"seed_purposes": purposes})
    with pytest.raises(ValueError, match=message):
        register(clashing)
    assert "confident" not in REGISTRY


def test_a_plugin_may_share_a_purpose_and_adds_its_own(confident):
    from workbench.algorithms import seed_purposes

    assert seed_purposes()["smooth_shuffle"] == 40
    sharing = type("Sharing", (Standalone,), {"name": "sharing", "seed_purposes": {"shared_model": 4}})
    register(sharing)  # the same name and number: FedAvg's purpose, shared as FML's is
    unregister("sharing")
    later = type("Later", (Standalone,), {"name": "later", "seed_purposes": {"later_init": 40}})
    with pytest.raises(ValueError, match=r"clashes with confident's 'smooth_shuffle' = 40 \(.*test_plugin\)"):
        register(later)


def test_a_diagnostic_declared_otherwise_elsewhere_is_refused_naming_both(confident):
    from workbench.algorithms.fedlora.advice import ADAPTER_CONTRIBUTION

    other = MethodDiagnostics(columns=(Diagnostic(ADAPTER_CONTRIBUTION, "something else"),))
    clashing = type("Clashing", (Standalone,), {"name": "clashing", "diagnostics": other})
    with pytest.raises(ValueError, match=r"'adapter_contribution' is declared otherwise by fedlora"):
        register(clashing)
    knobs = MethodDiagnostics(phase_knobs={"model": "lr"})
    clashing = type("Clashing", (Standalone,), {"name": "clashing", "diagnostics": knobs})
    with pytest.raises(ValueError, match=r"knobs for phase 'model' \('lr'\) differ from confident's"):
        register(clashing)
    generic = MethodDiagnostics(columns=(Diagnostic("update_norm", "mine"),))
    clashing = type("Clashing", (Standalone,), {"name": "clashing", "diagnostics": generic})
    with pytest.raises(ValueError, match=r"'update_norm' is a generic column"):
        register(clashing)
    assert "clashing" not in REGISTRY


def confident_table(confidence: list[float], steps: int = 20) -> pd.DataFrame:
    rows = [
        Row(
            **{
                **dict.fromkeys(ROW_COLUMNS, 0),
                **{"model": "cnn1", "algorithm": "confident", "round": r, "participated": True},
                **{"accuracy": 0.5, "loss": 1.0, "train_loss": 1.0, "num_train": 100},
                **{"local_rounds": 1, "local_steps": steps, "update_norm": 1.0},
            },
            phase_steps={"model": steps},
            diagnostics={CONFIDENCE: c},
        )
        for r, c in enumerate(confidence, start=1)
    ]
    return to_frame(rows)


def test_its_diagnostic_is_a_column_with_its_warnings_knobs_and_brief_line(confident):
    from workbench.algorithms import DIAGNOSTICS
    from workbench.core.diagnostics import brief, run_warnings
    from workbench.lab.report.sweep_tables import result_columns, swept_columns

    assert DIAGNOSTICS[CONFIDENCE] == "mean top-class probability" and CONFIDENCE in result_columns()
    table = confident_table([0.5, 0.995], steps=2)
    assert swept_columns(table) == []  # its column is a result, not a swept parameter
    assert brief(table) == "conf 100% · steps/round model 2 · update norm 1"
    found = run_warnings(table)
    assert [w.split(":")[0] for w in found] == ["overconfident", "undertrained"]
    assert "raise smooth_eps (or model_epochs), or lower batch_size" in found[1]
    (unstable,) = run_warnings(confident_table([0.5, math.inf]))  # declared finite: unstable
    assert unstable.startswith("unstable: smooth_confidence is not finite from round 2")
    assert unstable.endswith("lower smooth_eps, or lr (or max_grad_norm > 0 to clip each step)")
    unregister("confident")  # undeclared again: its rows are refused, its knobs gone
    with pytest.raises(ValueError, match=r"\['smooth_confidence'\] are not declared"):
        confident_table([0.5])
    register(ConfidentSmooth)


@pytest.mark.slow
def test_a_plugins_probe_fills_its_declared_column_through_a_run(confident, tiny):
    result = run_experiment(build_config({**tiny, "algorithm": "confident"}))
    values = result.table[CONFIDENCE]
    assert values.notna().all() and ((values > 0.1) & (values <= 1.0)).all()
