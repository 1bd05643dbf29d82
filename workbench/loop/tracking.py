"""Experiment tracking: a finished run's tidy rows and events sent to TensorBoard or MLflow.

One sink interface (`Sink`: parameters, tags, scalars, artifacts) and one feed (`track_run`)
that turns the run's table into metrics once: per evaluated round the mean over clients
(`mean/accuracy`, `mean/val_accuracy`, `mean/loss`, each diagnostic), every client's own
(`client_<k>/accuracy`, `client_<k>/loss`), the cumulative costs of all clients
(`cost/cum_train_flops`, `cost/cum_bytes_up`, `cost/cum_bytes_down`) and the uploads refused in
the round (`events/refused`); the step is the round. The run's flat parameters and its summary
go along, and so do tags (method, dataset, and for a sweep point its sweep and point id).

`track` picks the sink (`none` by default: nothing is imported, nothing written). `track_uri`
names where: a TensorBoard log folder, or any MLflow tracking URI. At `auto`, the store lives beside
the results: `<root>/tracking/tensorboard/<run>` or the MLflow SQLite store `<root>/tracking/mlflow.db`
(MLflow 3.17 refuses its old file store),
where root is the sweep folder for a sweep point (so a sweep is one store with one tracked run per
point) and the run directory otherwise. The run is sent when it finishes (also when resumed from a
checkpoint, so steps are never sent twice). The libraries are an optional extra
(`pip install -e '.[tracking]'`); a missing one is named before any data loads.
"""

from __future__ import annotations

import importlib.util
import math
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, Protocol

import pandas as pd

from workbench.algorithms import DIAGNOSTICS
from workbench.core.errors import UserError
from workbench.core.facts import REPORT_FILE, TRACKERS, TRACKING_DIR, TRIALS_DIR
from workbench.core.results import COST_COLUMNS

AUTO = "auto"  # track_uri's default: the store beside the results
EXTRA = "tracking"  # pyproject's optional extra holding both libraries
LIBRARY = {"tensorboard": "tensorboard", "mlflow": "mlflow"}  # import name each sink needs
EXPERIMENT = "workbench"  # the MLflow experiment runs are filed under
MLFLOW_DB = "mlflow.db"  # the default MLflow store: a SQLite file in the tracking folder
ARTIFACTS_DIR = "artifacts"  # the default store's artifact folder, beside mlflow.db
POINT_LAYOUT = ("points", "run")  # a sweep point's run directory: <sweep>/points/<id>/run


class Sink(Protocol):
    """Where a tracked run goes."""

    def params(self, flat: Mapping[str, Any]) -> None: ...
    def scalar(self, name: str, value: float, step: int) -> None: ...
    def artifact(self, path: Path) -> None: ...
    def close(self) -> None: ...


def check_available(track: str) -> None:
    """Refuse a tracker whose library is not installed, naming the extra to install."""
    if track == "none":
        return
    if track not in TRACKERS:
        raise UserError(f"parameter track={track!r} is not one of {', '.join(TRACKERS)}")
    if importlib.util.find_spec(LIBRARY[track]) is None:
        raise UserError(
            f"track={track} needs the {LIBRARY[track]} package: install the optional extra with "
            f"pip install -e '.[{EXTRA}]' (or pip install {LIBRARY[track]}), or use track=none"
        )


def sweep_point(run_dir: Path) -> tuple[Path, str] | None:
    """(sweep folder, point id) when run_dir is a sweep point's run directory; a tuning trial's
    sweep folder is its tune folder (trials live in `<tune>/tuning/points/<id>/run`)."""
    if run_dir.name == POINT_LAYOUT[1] and run_dir.parent.parent.name == POINT_LAYOUT[0]:
        folder = run_dir.parent.parent.parent
        return (folder.parent if folder.name == TRIALS_DIR else folder), run_dir.parent.name
    return None


def is_trial(run_dir: Path | None) -> bool:
    """Whether run_dir is a tuning trial's run directory."""
    return run_dir is not None and sweep_point(run_dir) is not None and run_dir.parents[2].name == TRIALS_DIR


def run_name(run_dir: Path | None, flat: Mapping[str, Any]) -> str:
    """The tracked run's name: the sweep point's id, else the run directory's name."""
    if run_dir is None:
        return f"{flat['algorithm']}-{flat['dataset']}-seed{flat['seed']}"
    point = sweep_point(run_dir)
    return point[1] if point else run_dir.name


def store_root(run_dir: Path | None) -> Path:
    """The folder a default store lives in (see the module doc)."""
    if run_dir is None:
        raise UserError(
            "track needs a place to write: give the run an output folder (--out, out_dir) or set track_uri"
        )
    point = sweep_point(run_dir)
    return (point[0] if point else run_dir) / TRACKING_DIR


def tags(run_dir: Path | None, flat: Mapping[str, Any]) -> dict[str, str]:
    """Tags of the tracked run: method, dataset, and the sweep and point of a sweep point."""
    found = {"method": str(flat["algorithm"]), "dataset": str(flat["dataset"])}
    if run_dir is not None:
        found["run_dir"] = str(run_dir)
        if (point := sweep_point(run_dir)) is not None:
            found.update(sweep=point[0].name, point=point[1], phase="trial" if is_trial(run_dir) else "point")
    return found


def metrics(table: pd.DataFrame, events: pd.DataFrame) -> Iterator[tuple[str, float, int]]:
    """(name, value, round) of every tracked metric, from the tidy table and the events."""
    for round_, rows in table.groupby("round"):
        step = int(round_)
        for column in ("accuracy", "val_accuracy", "loss", *DIAGNOSTICS):
            if column in rows and rows[column].notna().any():
                yield f"mean/{column}", float(rows[column].mean()), step
        for _, row in rows.iterrows():
            for column in ("accuracy", "loss"):
                yield f"client_{int(row['client'])}/{column}", float(row[column]), step
        for column in COST_COLUMNS:
            yield f"cost/cum_{column}", float(rows[f"cum_{column}"].sum()), step
    for round_ in sorted(set(table["round"])):
        count = int((events["round"] == round_).sum()) if len(events) else 0
        yield "events/refused", float(count), int(round_)


def track_run(
    flat: Mapping[str, Any],
    table: pd.DataFrame,
    events: pd.DataFrame,
    summary: Mapping[str, Any],
    run_dir: Path | None,
) -> None:
    """Send a finished run to the configured tracker (nothing when track is none)."""
    if flat["track"] == "none":
        return
    check_available(flat["track"])
    sinks: dict[str, Callable[..., Sink]] = {
        "tensorboard": TensorBoardSink,
        "mlflow": MLflowSink,
    }
    open_sink = sinks[flat["track"]]
    sink = open_sink(str(flat["track_uri"]), run_dir, flat)
    try:
        sink.params(flat)
        for name, value, step in metrics(table, events):
            sink.scalar(name, value, step)
        last = int(table["round"].max()) if len(table) else 0
        for key, value in summary.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                sink.scalar(f"summary/{key}", float(value), last)
        if run_dir is not None:
            for path in sorted(run_dir.glob("*.csv")) + sorted(run_dir.glob("*.json")):
                sink.artifact(path)
    finally:
        sink.close()


def _text(value: Any) -> str:
    """A parameter's value as tracked text (lists comma-separated)."""
    return ",".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value)


class TensorBoardSink:
    """torch.utils.tensorboard's SummaryWriter: scalars per round, parameters as hparams text."""

    def __init__(self, uri: str, run_dir: Path | None, flat: Mapping[str, Any]) -> None:
        from torch.utils.tensorboard import SummaryWriter

        root = Path(uri) if uri != AUTO else store_root(run_dir) / "tensorboard"
        self.log_dir = root / run_name(run_dir, flat)
        self.writer = SummaryWriter(log_dir=str(self.log_dir))
        self._tags = tags(run_dir, flat)

    def params(self, flat: Mapping[str, Any]) -> None:
        table = "\n".join(f"| {k} | {_text(v)} |" for k, v in {**self._tags, **flat}.items())
        self.writer.add_text("parameters", "| name | value |\n|---|---|\n" + table, 0)

    def scalar(self, name: str, value: float, step: int) -> None:
        if math.isfinite(value):
            self.writer.add_scalar(name, value, step)

    def artifact(self, path: Path) -> None:
        pass  # TensorBoard holds no files; the run directory beside it does

    def close(self) -> None:
        self.writer.close()


class MLflowSink:
    """MLflow's client: one run in the `workbench` experiment with parameters, tags, metrics
    and the run directory's files as artifacts."""

    def __init__(self, uri: str, run_dir: Path | None, flat: Mapping[str, Any]) -> None:
        self.uri = mlflow_uri(uri, store_root(run_dir) if uri == AUTO else Path())
        self.client, self.run_id = open_mlflow_run(self.uri, tags(run_dir, flat), run_name(run_dir, flat))
        self._metrics: list[Any] = []

    def params(self, flat: Mapping[str, Any]) -> None:
        from mlflow.entities import Param

        items = [Param(k, _text(v)[:500]) for k, v in flat.items()]
        for start in range(0, len(items), 100):  # MLflow takes at most 100 parameters a batch
            self.client.log_batch(self.run_id, params=items[start : start + 100])

    def scalar(self, name: str, value: float, step: int) -> None:
        from mlflow.entities import Metric

        if math.isfinite(value):
            self._metrics.append(Metric(name, value, 0, step))

    def artifact(self, path: Path) -> None:
        self.client.log_artifact(self.run_id, str(path))

    def close(self) -> None:
        for start in range(0, len(self._metrics), 1000):  # MLflow's batch limit
            self.client.log_batch(self.run_id, metrics=self._metrics[start : start + 1000])
        self.client.set_terminated(self.run_id)


def mlflow_uri(uri: str, root: Path) -> str:
    """The tracking URI: at auto, the SQLite store in the tracking folder `root` (MLflow 3.17
    refuses its old file store)."""
    if uri != AUTO:
        return uri
    root = root.resolve()
    root.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{root / MLFLOW_DB}"


def open_mlflow_run(uri: str, run_tags: Mapping[str, str], name: str) -> tuple[Any, str]:
    """(client, run id) of a new run in the `workbench` experiment. A SQLite store keeps its
    artifacts beside its database file (`artifacts/`); MLflow would put them in ./mlruns of the
    current directory."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    found = client.get_experiment_by_name(EXPERIMENT)
    if found is not None:
        experiment = found.experiment_id
    else:
        database = uri.removeprefix("sqlite:///") if uri.startswith("sqlite:///") else None
        location = (Path(database).parent / ARTIFACTS_DIR).as_uri() if database else None
        experiment = client.create_experiment(EXPERIMENT, artifact_location=location)
    return client, client.create_run(experiment, tags=dict(run_tags), run_name=name).info.run_id


def tracked_stores(flats: Iterable[Mapping[str, Any]]) -> list[tuple[str, str]]:
    """The distinct (track, track_uri) of a sweep's points that track (in first-seen order)."""
    found: dict[tuple[str, str], None] = {}
    for flat in flats:
        track, uri = str(flat.get("track", "none")), str(flat.get("track_uri", AUTO))
        if track != "none":
            found[(track, uri)] = None
    return list(found)


def track_report(folder: Path, report: Path, flats: Iterable[Mapping[str, Any]]) -> None:
    """Send a sweep's (or tune's) HTML report to every store its points were tracked in: with
    MLflow one run named `report` (tags sweep, phase=report) holding report.html and the sweep's
    json/csv files as artifacts; TensorBoard holds no files, so its `report` run gets a text entry
    with the report's path."""
    for track, uri in tracked_stores(flats):
        check_available(track)
        run_tags = {"sweep": folder.name, "phase": "report", "run_dir": str(folder)}
        if track == "mlflow":
            client, run_id = open_mlflow_run(mlflow_uri(uri, folder / TRACKING_DIR), run_tags, "report")
            for path in [report, *sorted(folder.glob("*.json")), *sorted(folder.glob("*.csv"))]:
                client.log_artifact(run_id, str(path))
            client.set_terminated(run_id)
        else:
            from torch.utils.tensorboard import SummaryWriter

            root = Path(uri) if uri != AUTO else folder / TRACKING_DIR / "tensorboard"
            with SummaryWriter(log_dir=str(root / "report")) as writer:
                writer.add_text("report", f"{REPORT_FILE} of sweep {folder.name}: {report.resolve()}", 0)
