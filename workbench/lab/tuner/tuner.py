"""The live tuner for JupyterLab: a method's own knobs and the preview size drive three panels.

Each setting runs in a background thread (cells stay runnable), streams every evaluated round
into the figure with a progress line and a diagnostics line (the adapter's share of the output,
optimizer steps per round, update norm; a finished setting's warnings beneath it, and a count
in the settings list), and stays as its own trace for comparison (pin keeps it,
✕ removes it, ↺ puts the controls back to it). A newer setting or Stop ends the running one at
its next round. Finished settings are cached, the notebook's own runs included. Built with
`observe` callbacks, not `interact` (which can stall headless runs); notebooks create it only
when `interactive=True`.
"""

from __future__ import annotations

import html
import threading
from typing import Any

import ipywidgets as widgets
import pandas as pd

from workbench.config import ConfigError, ExperimentConfig
from workbench.lab.tuner.controls import group_control, method_controls, setting_label, size_controls
from workbench.lab.tuner.figure import PALETTE, bundle, draw, make_figure
from workbench.lab.tuner.runs import Curve, RunFn, Runner, run_preview

MAX_SHOWN = 8  # settings drawn at once: more lines than this stop being readable
_LIVE: list[Tuner] = []  # a new tuner ends the runs of the previous one (one kernel, two cores)


class Tuner:
    """Controls, a progress line, a three-panel figure and the list of compared settings."""

    def __init__(
        self, config: ExperimentConfig, table: pd.DataFrame | None = None, run: RunFn = run_preview
    ) -> None:
        for old in _LIVE:
            old.close()
        _LIVE[:] = [self]
        self.base, self._lock, self._quiet = config, threading.RLock(), False
        self.order: list[str] = []  # keys of the shown settings, oldest first
        self.pinned: set[str] = set()
        self.colours: dict[str, str] = {}
        self.labels: dict[str, str] = {}
        self.rows: dict[str, tuple[widgets.HBox, widgets.HTML]] = {}  # key → (row, its label)
        self.current: str | None = None
        self.runner = Runner(self._update, run)
        self._build_controls(config)
        self.figure = make_figure()
        self.view = widgets.Output(layout=widgets.Layout(min_height="430px"))
        self.settings = widgets.VBox()
        for name in sorted(set(table["algorithm"])) if table is not None else []:
            assert table is not None
            done = config if name == config.run.algorithm else config.replace(algorithm=name)
            self._show(self.runner.add_finished(done, table[table["algorithm"] == name]), done)
        self.request()

    # ---- controls -----------------------------------------------------------------------
    def _build_controls(self, config: ExperimentConfig) -> None:
        """Algorithm dropdown, the method's knobs, preview size, Stop, progress line."""
        from workbench.algorithms import REGISTRY

        self.algorithm = widgets.Dropdown(
            options=list(REGISTRY), value=config.run.algorithm, description="algorithm"
        )
        self.size = size_controls(config)
        self.group = group_control(config)
        self.stop_button = widgets.Button(
            description="Stop", icon="stop", tooltip="stop the running setting at its next round"
        )
        self.stop_button.on_click(lambda _: self.runner.stop())
        self.status = widgets.HTML().add_class("workbench-tuner-status")
        self.knob_box = widgets.HBox(layout=widgets.Layout(flex_flow="row wrap"))
        self._knobs: dict[str, dict[str, widgets.Widget]] = {}
        for control in (self.algorithm, self.group, *self.size.values()):
            control.observe(self._changed, names="value")
        self._show_knobs(config.run.algorithm)

    def knobs(self, algorithm: str | None = None) -> dict[str, widgets.Widget]:
        """The controls of a method's own knobs (made once per method, notebook values first)."""
        algorithm = algorithm or self.algorithm.value
        if algorithm not in self._knobs:
            self._knobs[algorithm] = method_controls(algorithm, self.base)
            for control in self._knobs[algorithm].values():
                control.observe(self._changed, names="value")
        return self._knobs[algorithm]

    def _show_knobs(self, algorithm: str) -> None:
        """Put the method's knobs in the knob row (a note when it has none)."""
        controls = list(self.knobs(algorithm).values())
        self.knob_box.children = controls or [widgets.HTML(f"<i>{algorithm} has no knobs of its own</i>")]

    def _changed(self, change: dict) -> None:
        """Any control moved: show the method's knobs and request the setting."""
        if self._quiet:
            return
        if change["owner"] is self.algorithm:
            self._show_knobs(self.algorithm.value)
        self.request()

    def setting(self) -> ExperimentConfig:
        """The config the controls describe: the notebook's, with this method, knobs and size."""
        flat: dict[str, Any] = {name: control.value for name, control in self.size.items()}
        flat.update({name: control.value for name, control in self.knobs().items()})
        return self.base.replace(algorithm=self.algorithm.value, models=self.group.value, **flat)

    def set_controls(self, config: ExperimentConfig) -> None:
        """Put the controls to a setting's values without starting anything."""
        flat, self._quiet = config.to_flat(), True
        try:
            self.algorithm.value = config.run.algorithm
            self.group.value = tuple(flat["models"])
            self._show_knobs(config.run.algorithm)
            for name, control in [*self.size.items(), *self.knobs().items()]:
                control.value = tuple(flat[name]) if isinstance(flat[name], list) else flat[name]
        finally:
            self._quiet = False

    # ---- settings ------------------------------------------------------------------------
    def request(self) -> None:
        """Make the controls' setting current: drawn from cache, or run in the background."""
        try:
            config = self.setting()
        except ConfigError as error:
            self.status.value = f"<span style='color:#b00'>not run: {html.escape(str(error))}</span>"
            return
        key = self.runner.submit(config)
        with self._lock:
            self.current = key
            self._show(key, config)
            self._refresh(key)

    def _show(self, key: str, config: ExperimentConfig) -> None:
        """Add a setting to the compared ones (dropping the oldest unpinned one past the cap)."""
        with self._lock:
            if key in self.order:
                return
            spare = [k for k in self.order if k not in self.pinned and k != self.current]
            if len(self.order) >= MAX_SHOWN and spare:
                self._forget(spare[0])
            used = {self.colours.get(k) for k in self.order}
            self.colours[key] = next(c for c in PALETTE if c not in used)
            self.labels[key] = setting_label(config, self.base)
            self.order.append(key)
            self._row(key)

    def remove(self, key: str) -> None:
        """Take a setting off the figure (its cached result stays); stops it if it runs."""
        with self._lock:
            if key == self.runner.running:
                self.runner.stop()
            self._forget(key)
            self._refresh(None)

    def _forget(self, key: str) -> None:
        """Drop a setting from the shown ones (no redraw)."""
        if key in self.order:
            self.order.remove(key)
        self.pinned.discard(key)
        self.rows.pop(key, None)

    def pin(self, key: str, on: bool) -> bool:
        """Keep a setting on the figure past the cap; False when too many are pinned."""
        with self._lock:
            if on and len(self.pinned - {key}) >= MAX_SHOWN - 1:
                self.status.value = f"at most {MAX_SHOWN - 1} pinned settings: unpin one first"
                return False
            (self.pinned.add if on else self.pinned.discard)(key)
            return True

    def select(self, key: str) -> None:
        """Put the controls back to a shown setting and make it current."""
        self.set_controls(self.runner.curves[key].config)
        self.request()

    def _row(self, key: str) -> None:
        """The list row of a setting: colour, label and state; pin, ↺ and ✕ buttons."""
        text = widgets.HTML(layout=widgets.Layout(flex="1 1 auto"))
        pin = _icon(widgets.ToggleButton, "thumb-tack", "pin: keep this setting shown")
        back = _icon(widgets.Button, "undo", "set the controls to this setting")
        drop = _icon(widgets.Button, "times", "remove this setting from the figure")
        pin.observe(lambda change: self._pin_clicked(key, pin, change["new"]), names="value")
        back.on_click(lambda _: self.select(key))
        drop.on_click(lambda _: self.remove(key))
        self.rows[key] = (widgets.HBox([pin, back, drop, text]), text)

    def _pin_clicked(self, key: str, button: widgets.ToggleButton, on: bool) -> None:
        """Pin toggled in the list: undo the toggle when the pin is refused."""
        if not self.pin(key, on):
            button.value = False

    # ---- drawing (main thread and worker thread) ----------------------------------------
    def _update(self, key: str, curve: Curve) -> None:
        """Runner callback (worker thread): a setting started, drew a round, or ended."""
        with self._lock:
            if curve.state == "superseded" and key not in self.pinned and key != self.current:
                self._forget(key)
            self._refresh(key)

    def _refresh(self, key: str | None) -> None:
        """Redraw the figure, the list and (for the current setting) the progress line."""
        with self._lock:
            shown = [
                (k, self.labels[k], self.colours[k], self.runner.curves[k])
                for k in self.order
                if k in self.runner.curves
            ]
            draw(self.figure, shown, self.current)
            self.view.outputs = (bundle(self.figure),)
            short = distinguishing([label for _, label, _, _ in shown])
            for (k, label, colour, curve), brief in zip(shown, short, strict=True):
                text = self.rows[k][1]
                weight = "bold" if k == self.current else "normal"
                text.value = (
                    f"<span style='color:{colour};font-size:18px'>■</span> "
                    f"<span style='font-weight:{weight}' title='{html.escape(label, quote=True)}'>"
                    f"{html.escape(brief)}</span> <span style='color:#666'>{describe(curve)}</span>"
                )
            self.settings.children = [self.rows[k][0] for k in reversed(self.order) if k in self.rows]
            if self.current in self.labels and key in (None, self.current):
                curve = self.runner.curves[self.current]
                self.status.value = (
                    f"<b>{html.escape(self.labels[self.current])}</b>: {describe(curve)}"
                    f"{diagnostics_html(curve)}"
                )

    def widget(self) -> widgets.Widget:
        """The whole tuner as one displayable widget."""
        size = widgets.HBox([self.algorithm, self.group, *self.size.values(), self.stop_button])
        title = widgets.HTML(
            "<b>settings</b> (newest first; pin keeps one, ↺ sets the controls to it, ✕ removes it)"
        )
        return widgets.VBox([size, self.knob_box, self.status, self.view, title, self.settings])

    def close(self) -> None:
        """End the background runs (a newer tuner in the same kernel calls this)."""
        self.runner.close()


def _icon(kind: type, icon: str, tooltip: str) -> widgets.Widget:
    """A button showing only an icon, wide enough for it (narrower ones render "✕..")."""
    return kind(icon=icon, tooltip=tooltip, layout=widgets.Layout(width="40px", padding="0"))


def distinguishing(labels: list[str]) -> list[str]:
    """Each label cut to its method and the knobs in which it differs from the other shown
    settings of that method ('fedlora · rank=3' beside 'fedlora · rank=4'; 'fedproto' beside
    them); a lone setting keeps its whole label."""
    if len(labels) < 2:
        return list(labels)
    parts = [label.split(" · ") for label in labels]
    common: dict[str, set[str]] = {}
    for method, *knobs in parts:
        common[method] = common[method] & set(knobs) if method in common else set(knobs)
    return [" · ".join([method, *[k for k in knobs if k not in common[method]]]) for method, *knobs in parts]


WARNING_STYLE = "color:#9a3412;background:#fff7ed;border-left:4px solid #ea580c;padding:2px 6px;margin:2px 0"


def diagnostics_html(curve: Curve) -> str:
    """The setting's diagnostics line and, once it finished, its warnings (one block each)."""
    parts = []
    if curve.diagnostics:
        parts.append(
            "<div class='workbench-tuner-diagnostics' style='color:#444'>diagnostics: "
            f"{html.escape(curve.diagnostics)}</div>"
        )
    parts += [
        f"<div class='workbench-tuner-warning' style='{WARNING_STYLE}'>⚠ {html.escape(w)}</div>"
        for w in curve.warnings
    ]
    return "".join(parts)


def describe(curve: Curve) -> str:
    """A setting's state for the list and the progress line."""
    last = curve.round[-1] if curve.round else 0
    if curve.state == "done":
        flag = (
            f" · <span style='color:#c2410c'>⚠ {len(curve.warnings)} warning(s)</span>"
            if curve.warnings
            else ""
        )
        return (
            f"final {curve.accuracy[-1]:.1f}% · best {max(curve.accuracy):.1f}% · "
            f"{curve.gflop[-1]:.3g} GFLOP · {curve.mb[-1]:.3g} MB{flag}"
        )
    if curve.state == "running":
        return "loading data and models…" if not curve.round else curve.progress()
    if curve.state == "queued":
        return "queued"
    if curve.state == "failed":
        return f"<span style='color:#b00'>failed: {html.escape(curve.error)}</span>"
    why = "stopped" if curve.state == "stopped" else "cancelled by a newer setting"
    return f"{why} at round {last} of {curve.total}"
