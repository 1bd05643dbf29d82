"""Interactive tuning in JupyterLab: rank, μ and algorithm controls driving a live FigureWidget.

Each setting runs a small experiment once (cached by its parameters) and the figure's traces
are updated in place. Built with `observe` callbacks, not `interact` (which can stall headless
runs); notebooks create it only when `interactive=True`.
"""

from __future__ import annotations

import json
from typing import Any

import ipywidgets as widgets
import plotly.graph_objects as go

from workbench.config import ExperimentConfig
from workbench.core.results import mean_accuracy


class Tuner:
    """Controls + a FigureWidget of mean accuracy per round for the chosen setting."""

    def __init__(self, config: ExperimentConfig, max_rounds: int = 10) -> None:
        from workbench.algorithms import REGISTRY

        self.config = config.replace(rounds=min(config.federation.rounds, max_rounds), eval_every=1)
        self.cache: dict[str, Any] = {}
        limit = min(500, config.num_classes)  # a head adapter is 500→C
        self.rank = widgets.IntSlider(value=min(config.fedlora.rank, limit), min=1, max=limit,
                                      description="rank", continuous_update=False)
        self.mu = widgets.FloatSlider(value=config.fedlora.mu, min=0, max=1, step=0.05,
                                      description="μ", continuous_update=False)
        self.algorithm = widgets.Dropdown(options=list(REGISTRY),
                                          value=config.run.algorithm, description="algorithm")
        self.status = widgets.HTML()
        self.figure = go.FigureWidget(layout=dict(template="plotly_white", height=380,
                                                  title="mean local test accuracy per round",
                                                  xaxis_title="round", yaxis_title="accuracy"))
        self.figure.add_scatter(mode="lines+markers", name="current")
        for control in (self.rank, self.mu, self.algorithm):
            control.observe(lambda _: self.redraw(), names="value")
        self.redraw()

    def setting(self) -> ExperimentConfig:
        """The config the controls describe now."""
        return self.config.replace(rank=self.rank.value, mu=float(self.mu.value),
                                   algorithm=self.algorithm.value)

    def redraw(self) -> None:
        """Run (or fetch from cache) the current setting and update the figure in place."""
        from workbench.loop.runner import run_experiment

        config = self.setting()
        key = json.dumps(config.to_flat(), sort_keys=True)
        if key not in self.cache:
            self.status.value = f"running {config.run.algorithm} (rank {self.rank.value}, μ {self.mu.value:.2f})…"
            self.cache[key] = mean_accuracy(run_experiment(config).table)
        curve = self.cache[key]
        with self.figure.batch_update():
            self.figure.data[0].x, self.figure.data[0].y = list(curve["round"]), list(curve["accuracy"])
            self.figure.data[0].name = f"{config.run.algorithm} r={self.rank.value} μ={self.mu.value:.2f}"
        self.status.value = f"final mean accuracy {curve['accuracy'].iloc[-1]:.4f}"

    def widget(self) -> widgets.Widget:
        """The whole tuner as one displayable widget."""
        return widgets.VBox([widgets.HBox([self.rank, self.mu, self.algorithm]), self.status,
                             self.figure])
