"""Experiment configuration: frozen dataclasses built by one strict call from flat parameters.

The flat names are the ones a notebook's `parameters` cell, the CLI (`--rank 4`) and a sweep
spec use. `build_config` rejects unknown names, wrong types and out-of-range values with an
error naming the parameter, the value and what is allowed, before any data or model exists.
Method-specific knobs carry their method's prefix (`fd_lambda`, `fml_alpha`): no knob is shared
between methods under one name.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import operator
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar, get_type_hints

from workbench.core.errors import UserError
from workbench.core.zoo import ZOO, assign_models, linear_shapes

DATASET_CLASSES = {"digits": 10, "cifar10": 10, "cifar100": 100}
ALGORITHMS = ("fedlora", "standalone", "fedavg", "lg_fedavg", "fd", "fedproto", "fml", "fedkd")
PARTITIONS = ("pathological", "dirichlet")
DEVICES = ("auto", "cpu", "cuda")
LORA_TARGETS = ("head", "fc1", "fc2")
_BOUNDS = (("ge", ">=", operator.ge), ("gt", ">", operator.gt),
           ("le", "<=", operator.le), ("lt", "<", operator.lt))


class ConfigError(UserError):
    """A parameter is unknown, of the wrong type or out of range."""


def param(default: Any, help: str, *, choices: tuple | None = None, ge: float | None = None,
          gt: float | None = None, le: float | None = None, lt: float | None = None) -> Any:
    """A config field with its help text and allowed range (read by validation, CLI and docs)."""
    meta = {"help": help, "choices": choices, "ge": ge, "gt": gt, "le": le, "lt": lt}
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class Section:
    """Base of config sections; flat name = prefix + field name."""

    prefix: ClassVar[str] = ""


@dataclass(frozen=True)
class RunConfig(Section):
    algorithm: str = param("fedlora", "method to run", choices=ALGORITHMS)
    seed: int = param(0, "seed of partitions, model init, sampling and batches", ge=0)
    device: str = param("auto", "torch device: auto picks cuda when available", choices=DEVICES)
    checkpoint_every: int = param(5, "with a run directory, save a resumable checkpoint every N "
                                     "rounds (0: never)", ge=0)


@dataclass(frozen=True)
class DataConfig(Section):
    dataset: str = param("digits", "digits (bundled, offline), cifar10 or cifar100",
                         choices=tuple(DATASET_CLASSES))
    data_dir: str = param("data", "where CIFAR lives or is downloaded to")
    download: bool = param(True, "download CIFAR into data_dir when it is missing")
    partition: str = param("pathological", "label skew across clients", choices=PARTITIONS)
    classes_per_client: int = param(2, "pathological: classes each client holds", ge=1)
    dirichlet_alpha: float = param(0.5, "dirichlet: concentration; smaller means more label skew", gt=0)
    test_fraction: float = param(0.25, "digits only: share held out for local tests", gt=0, lt=1)
    augment: bool = param(True, "random crop (and flip where valid) on training batches")


@dataclass(frozen=True)
class FederationConfig(Section):
    num_clients: int = param(10, "number of clients", ge=1)
    fraction: float = param(1.0, "share of clients sampled each round", gt=0, le=1)
    rounds: int = param(20, "communication rounds", ge=1)
    eval_every: int = param(1, "evaluate all clients every N rounds (and after the last)", ge=1)
    models: tuple[str, ...] = param(tuple(ZOO), "zoo assigned round-robin to clients",
                                    choices=tuple(ZOO))


@dataclass(frozen=True)
class TrainConfig(Section):
    model_epochs: int = param(1, "local epochs training the private model per round", ge=1)
    batch_size: int = param(64, "training batch size", ge=1)
    lr: float = param(0.01, "SGD learning rate of the private model", gt=0)
    momentum: float = param(0.9, "SGD momentum", ge=0, lt=1)
    weight_decay: float = param(1e-3, "SGD weight decay", ge=0)
    eval_batch_size: int = param(512, "evaluation batch size", ge=1)


@dataclass(frozen=True)
class FedLoRAConfig(Section):
    rank: int = param(4, "LoRA rank r", ge=1)
    lora_alpha: float = param(8.0, "LoRA scale numerator: the branch is scaled by alpha/r", gt=0)
    mu: float = param(0.5, "weight of the adapter-on loss while training the model", ge=0, le=1)
    adapter_epochs: int = param(1, "local epochs training the adapter per round", ge=1)
    adapter_lr: float = param(0.01, "SGD learning rate of the adapter", gt=0)
    lora_targets: tuple[str, ...] = param(("head",), "Linear layers carrying the adapter",
                                          choices=LORA_TARGETS)


@dataclass(frozen=True)
class FedAvgConfig(Section):
    prefix: ClassVar[str] = "fedavg_"
    model: str = param("cnn5", "the one architecture every FedAvg client uses", choices=tuple(ZOO))


@dataclass(frozen=True)
class FDConfig(Section):
    prefix: ClassVar[str] = "fd_"
    weight: float = param(1.0, "lambda: weight of distillation toward global class logits", ge=0)
    temperature: float = param(1.0, "softmax temperature of the distillation term", gt=0)


@dataclass(frozen=True)
class FedProtoConfig(Section):
    prefix: ClassVar[str] = "fedproto_"
    weight: float = param(1.0, "lambda: weight of the distance to global prototypes", ge=0)
    predict: str = param("prototype", "evaluate by nearest prototype or by the head",
                         choices=("prototype", "head"))


@dataclass(frozen=True)
class FMLConfig(Section):
    prefix: ClassVar[str] = "fml_"
    alpha: float = param(0.5, "private model: weight of CE vs KL toward the shared model", ge=0, le=1)
    beta: float = param(0.5, "shared model: weight of CE vs KL toward the private model", ge=0, le=1)
    shared_model: str = param("cnn5", "architecture of the shared model", choices=tuple(ZOO))


@dataclass(frozen=True)
class FedKDConfig(Section):
    prefix: ClassVar[str] = "fedkd_"
    student_model: str = param("cnn5", "architecture of the shared student", choices=tuple(ZOO))
    energy_start: float = param(0.95, "SVD energy schedule start; round t of R keeps start + (end - start)·t/R",
                                gt=0, le=1)
    energy_end: float = param(0.98, "SVD energy kept in the last round R", gt=0, le=1)
    temperature: float = param(1.0, "distillation temperature", gt=0)
    hidden_weight: float = param(1.0, "weight of the hidden-state (representation) loss", ge=0)


SECTIONS: dict[str, type[Section]] = {
    "run": RunConfig, "data": DataConfig, "federation": FederationConfig, "train": TrainConfig,
    "fedlora": FedLoRAConfig, "fedavg": FedAvgConfig, "fd": FDConfig, "fedproto": FedProtoConfig,
    "fml": FMLConfig, "fedkd": FedKDConfig,
}


@dataclass(frozen=True)
class ExperimentConfig:
    run: RunConfig
    data: DataConfig
    federation: FederationConfig
    train: TrainConfig
    fedlora: FedLoRAConfig
    fedavg: FedAvgConfig
    fd: FDConfig
    fedproto: FedProtoConfig
    fml: FMLConfig
    fedkd: FedKDConfig

    @property
    def num_classes(self) -> int:
        """Classes of the configured dataset."""
        return DATASET_CLASSES[self.data.dataset]

    def client_models(self) -> list[str]:
        """Architecture of each client: round-robin over the zoo (one model for FedAvg)."""
        if self.run.algorithm == "fedavg":
            return [self.fedavg.model] * self.federation.num_clients
        return assign_models(self.federation.models, self.federation.num_clients)

    def to_flat(self) -> dict[str, Any]:
        """The flat parameters that rebuild this config (JSON-friendly: tuples become lists)."""
        flat = {}
        for section in SECTIONS:
            obj = getattr(self, section)
            for f in fields(obj):
                value = getattr(obj, f.name)
                flat[obj.prefix + f.name] = list(value) if isinstance(value, tuple) else value
        return flat

    def replace(self, **flat: Any) -> ExperimentConfig:
        """A new config with some flat parameters changed, validated like any other."""
        return build_config({**self.to_flat(), **flat})


def parameter_table() -> dict[str, tuple[type[Section], dataclasses.Field]]:
    """Every flat parameter name → (its section class, its field)."""
    table = {}
    for cls in SECTIONS.values():
        for f in fields(cls):
            table[cls.prefix + f.name] = (cls, f)
    return table


def defaults() -> dict[str, Any]:
    """Flat parameter names with their default values."""
    return build_config({}).to_flat()


def _coerce(name: str, value: Any, kind: Any) -> Any:
    """Convert a flat value (typed, or a string from the command line) to the field's type."""
    def bad(expected: str) -> ConfigError:
        return ConfigError(f"parameter {name}={value!r}: expected {expected}")

    if kind is bool:
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if isinstance(value, str) and text in ("true", "1", "yes", "false", "0", "no"):
            return text in ("true", "1", "yes")
        raise bad("true or false")
    if kind is int:
        if isinstance(value, bool) or isinstance(value, float) and not value.is_integer():
            raise bad("an integer")
        try:
            return int(value) if not isinstance(value, str) else int(value.strip())
        except (TypeError, ValueError):
            raise bad("an integer") from None
    if kind is float:
        if isinstance(value, bool):
            raise bad("a number")
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise bad("a number") from None
        if not math.isfinite(number):
            raise bad("a finite number")
        return number
    if kind == tuple[str, ...]:
        items = value.split(",") if isinstance(value, str) else value
        if not isinstance(items, (list, tuple)) or not items:
            raise bad("a non-empty comma-separated list")
        return tuple(str(item).strip() for item in items)
    if not isinstance(value, str):
        raise bad("a string")
    return value


def _check_range(name: str, value: Any, meta: Mapping[str, Any]) -> None:
    """Refuse a value outside the field's choices or bounds."""
    choices = meta["choices"]
    for item in value if isinstance(value, tuple) else (value,):
        if choices is not None and item not in choices:
            raise ConfigError(f"parameter {name}={item!r} is not allowed; choose from {list(choices)}")
    if isinstance(value, (str, tuple, bool)):
        return
    for key, symbol, holds in _BOUNDS:
        if meta[key] is not None and not holds(value, meta[key]):
            raise ConfigError(f"parameter {name}={value!r} is out of range: must be {symbol} {meta[key]}")


def _unknown(names: list[str], known: list[str]) -> ConfigError:
    """An error listing unknown names with the closest known ones."""
    hints = []
    for name in names:
        close = difflib.get_close_matches(name, known, n=1)
        hints.append(f"{name!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
    return ConfigError(f"unknown parameter(s): {', '.join(hints)}; run `python -m workbench "
                       f"params` for the full list")


def build_config(flat: Mapping[str, Any]) -> ExperimentConfig:
    """The one strict call: flat parameters → validated, frozen ExperimentConfig."""
    table = parameter_table()
    unknown = sorted(set(flat) - set(table))
    if unknown:
        raise _unknown(unknown, list(table))
    values: dict[str, dict[str, Any]] = {section: {} for section in SECTIONS}
    section_of = {cls: section for section, cls in SECTIONS.items()}
    for name, raw in flat.items():
        cls, f = table[name]
        value = _coerce(name, raw, get_type_hints(cls)[f.name])
        _check_range(name, value, f.metadata)
        values[section_of[cls]][f.name] = value
    config = ExperimentConfig(**{s: SECTIONS[s](**v) for s, v in values.items()})
    _check_consistency(config)
    return config


def _check_consistency(config: ExperimentConfig) -> None:
    """Cross-parameter rules: classes vs dataset, adapter homogeneity and rank bound."""
    classes = config.num_classes
    if config.data.partition == "pathological" and config.data.classes_per_client > classes:
        raise ConfigError(
            f"parameter classes_per_client={config.data.classes_per_client} is out of range: "
            f"{config.data.dataset} has {classes} classes")
    if config.federation.eval_every > config.federation.rounds:
        raise ConfigError(f"parameter eval_every={config.federation.eval_every} is out of range: "
                          f"must be <= rounds={config.federation.rounds}")
    if config.run.algorithm == "fedlora":
        check_adapter_targets(sorted(set(config.client_models())), classes,
                              config.fedlora.lora_targets, config.fedlora.rank)


def check_adapter_targets(models: list[str], num_classes: int, targets: tuple[str, ...],
                          rank: int) -> None:
    """Refuse targets whose shapes differ across the clients' models, or a rank they cannot hold."""
    for target in targets:
        shapes = {model: linear_shapes(model, num_classes)[target] for model in models}
        if len(set(shapes.values())) > 1:
            listed = ", ".join(f"{m}: {s[0]}→{s[1]}" for m, s in shapes.items())
            raise ConfigError(f"parameter lora_targets: layer {target!r} is not homogeneous across "
                              f"the clients' models ({listed}); the adapter must have one shape")
        d_in, d_out = next(iter(shapes.values()))
        if rank > min(d_in, d_out):
            raise ConfigError(f"parameter rank={rank} is out of range: layer {target!r} is "
                              f"{d_in}→{d_out}, so rank must be <= {min(d_in, d_out)}")
