"""The tuner's controls, made from a method's own knobs (their type, help, choices and bounds).

`method_section` is the one place that knows where a method's knobs are declared.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, get_type_hints

import ipywidgets as widgets

from workbench.algorithms import REGISTRY
from workbench.config import ConfigError, ExperimentConfig, FederationConfig
from workbench.core.params import Section
from workbench.core.zoo import GROUPS

SIZE_KNOBS = ("num_clients", "rounds", "fraction")  # the preview's size, notebook values first
_STYLE = {"description_width": "initial"}


def method_section(algorithm: str) -> type[Section] | None:
    """The frozen dataclass of a method's own knobs, or None when it has none."""
    return REGISTRY[algorithm].Params


def method_knobs(algorithm: str) -> list[tuple[str, dataclasses.Field, Any]]:
    """(flat name, field, type) of each knob the method owns; flat name = prefix + field name."""
    section = method_section(algorithm)
    if section is None:
        return []
    hints = get_type_hints(section)
    return [(section.prefix + f.name, f, hints[f.name]) for f in dataclasses.fields(section)]


def knob_values(config: ExperimentConfig, algorithm: str | None = None) -> dict[str, Any]:
    """The flat values of a method's knobs in a config (default: the config's own method)."""
    flat = config.to_flat()
    return {name: flat[name] for name, _, _ in method_knobs(algorithm or config.run.algorithm)}


def short(value: Any) -> str:
    """A value for a label: 0.50 → '0.5', lists joined by '+'."""
    if isinstance(value, (list, tuple)):
        return "+".join(map(str, value))
    return f"{value:g}" if isinstance(value, float) else str(value)


def setting_label(config: ExperimentConfig, base: ExperimentConfig) -> str:
    """'fedlora · rank=8 · mu=0.5 …': the method, its knobs, and the size where it differs."""
    section = method_section(config.run.algorithm)
    prefix = section.prefix if section else ""
    parts = [config.run.algorithm] + [
        f"{name.removeprefix(prefix)}={short(value)}" for name, value in knob_values(config).items()
    ]
    flat, base_flat = config.to_flat(), base.to_flat()
    parts += [f"{name}={short(flat[name])}" for name in SIZE_KNOBS if flat[name] != base_flat[name]]
    if flat["models"] != base_flat["models"]:
        parts.append(f"models={group_name(tuple(flat['models']))}")
    return " · ".join(parts)


def group_name(models: tuple[str, ...]) -> str:
    """A federation's models as the group they form ('mixed'), else the models joined by '+'."""
    return next((g for g, members in GROUPS.items() if members == models), short(models))


def group_control(config: ExperimentConfig) -> widgets.Dropdown:
    """The menu of model groups (the zoo's named federations), at the notebook's models; a
    notebook whose models form no group keeps them as one more entry."""
    models = tuple(config.federation.models)
    options = [(name, members) for name, members in GROUPS.items()]
    if models not in GROUPS.values():
        options.append((short(models), models))
    return widgets.Dropdown(
        options=options,
        value=models,
        description="models",
        tooltip="the federation's model group, assigned round-robin to clients",
        style=_STYLE,
        layout=widgets.Layout(width="190px"),
    )


def _valid(config: ExperimentConfig, name: str, value: Any) -> bool:
    """Whether the config accepts this value of one knob (bounds that depend on others)."""
    try:
        config.replace(**{name: value})
    except ConfigError:
        return False
    return True


def _int_control(name: str, meta: dict, value: int, config: ExperimentConfig) -> widgets.Widget:
    """An int slider from the field's bounds; without an upper bound, the largest valid value
    up to max(16, 4 × value) (e.g. rank ≤ the adapted layer's size)."""
    low = int(meta["ge"] if meta["ge"] is not None else (meta["gt"] + 1 if meta["gt"] is not None else 0))
    high = meta["le"] if meta["le"] is not None else max(16, 4 * value)
    high = int(high)
    while high > max(low, value) and not _valid(config, name, high):
        high -= 1
    return widgets.IntSlider(value=value, min=low, max=max(high, value), continuous_update=False)


def _float_control(meta: dict, value: float) -> widgets.Widget:
    """A slider: linear between two bounds, logarithmic for a strictly positive value, else
    linear from the lower bound to 4 × value."""
    low = meta["ge"] if meta["ge"] is not None else meta["gt"]
    high = meta["le"] if meta["le"] is not None else meta["lt"]
    if low is not None and high is not None:
        return widgets.FloatSlider(
            value=value, min=low, max=high, step=(high - low) / 20, continuous_update=False
        )
    if meta["gt"] is not None and value > 0:
        centre = math.log10(value)
        return widgets.FloatLogSlider(
            value=value, base=10, min=centre - 2, max=centre + 2, step=0.25, continuous_update=False
        )
    if low is not None:
        top = max(4 * value, 1.0)
        return widgets.FloatSlider(value=value, min=low, max=top, step=top / 40, continuous_update=False)
    return widgets.FloatText(value=value, continuous_update=False)


def knob_control(
    name: str, f: dataclasses.Field, kind: Any, value: Any, config: ExperimentConfig
) -> widgets.Widget:
    """The control of one knob, labelled by its flat name, with its help as tooltip."""
    meta = dict(f.metadata)
    if callable(meta["choices"]):  # choices that follow the registry
        meta["choices"] = meta["choices"]()
    if kind is bool:
        control = widgets.Checkbox(value=value, indent=False)
    elif meta["choices"] is not None and kind == tuple[str, ...]:
        control = widgets.SelectMultiple(
            options=meta["choices"], value=tuple(value), rows=len(meta["choices"])
        )
    elif meta["choices"] is not None:
        control = widgets.Dropdown(options=meta["choices"], value=value)
    elif kind is int:
        control = _int_control(name, meta, value, config)
    elif kind is float:
        control = _float_control(meta, value)
    else:
        control = widgets.Text(value=str(value), continuous_update=False)
    control.description, control.tooltip, control.style = name, meta["help"], _STYLE
    return control


def method_controls(algorithm: str, config: ExperimentConfig) -> dict[str, widgets.Widget]:
    """Flat name → control for each knob the method owns, starting at the config's values."""
    probe = config.replace(algorithm=algorithm)
    values = knob_values(probe)
    return {
        name: knob_control(name, f, kind, values[name], probe) for name, f, kind in method_knobs(algorithm)
    }


def size_controls(config: ExperimentConfig) -> dict[str, widgets.Widget]:
    """Clients, rounds and fraction of the preview, starting at the notebook's values (no cap)."""
    fed = config.federation
    tips = {f.name: f.metadata["help"] for f in dataclasses.fields(FederationConfig)}
    controls = {
        "num_clients": widgets.BoundedIntText(value=fed.num_clients, min=1, max=100_000),
        "rounds": widgets.BoundedIntText(value=fed.rounds, min=1, max=100_000),
        "fraction": widgets.BoundedFloatText(value=fed.fraction, min=0.001, max=1.0, step=0.05),
    }
    for name, control in controls.items():
        control.description, control.tooltip = name, tips[name]
        control.style, control.layout = _STYLE, widgets.Layout(width="170px")
        control.continuous_update = False
    return controls
