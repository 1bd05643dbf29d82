"""Experiment configuration: frozen sections built by one strict call from flat parameters.

The flat names are the ones a notebook's `parameters` cell, the CLI (`--rank 4`) and a sweep
spec use. The run's own sections live here; each method's section (`Algorithm.Params`) lives in
its module and reaches the config through the registry, so the parameter table, the
algorithm choices and the checks follow whatever is registered. `build_config` rejects unknown
names, wrong types and out-of-range values with an error naming the parameter, the value and
what is allowed, before any data or model exists. Nothing here imports torch.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any, ClassVar, get_type_hints

from workbench.algorithms.registry import REGISTRY
from workbench.core.facts import (
    AGGREGATORS,
    ATTACKS,
    CLIENTS_WHY,
    DATASET_CLASSES,
    DEVICE_PROFILES,
    DEVICES,
    DP_MODES,
    EVAL_CLIENTS,
    LATE_UPLOADS,
    MAX_CLIENTS,
    MAX_EPOCHS,
    MAX_ROUNDS,
    MAX_SEED,
    PARTITIONS,
    SEED_WHY,
    TOO_LONG,
    TRACKERS,
)
from workbench.core.params import ConfigError, Section, check_range, coerce, param, unknown_names
from workbench.core.zoo import GROUPS, MODELS, expand_models

__all__ = [
    "ConfigError",
    "ExperimentConfig",
    "build_config",
    "defaults",
    "malicious_count",
    "parameter_table",
    "stored_config",
]


@dataclass(frozen=True)
class RunConfig(Section):
    algorithm: str = param("fedlora", "method to run", choices=lambda: tuple(REGISTRY))
    seed: int = param(
        0, "seed of partitions, model init, sampling and batches", ge=0, le=MAX_SEED, why=SEED_WHY
    )
    device: str = param("auto", "torch device: auto picks cuda when available", choices=DEVICES)
    checkpoint_every: int = param(
        5, "with a run directory, save a resumable checkpoint every N rounds (0: never)", ge=0
    )
    track: str = param(
        "none",
        "send the finished run to an experiment tracker: tensorboard or mlflow (extra: tracking)",
        choices=TRACKERS,
    )
    track_uri: str = param(
        "auto",
        "tracker store: a TensorBoard log folder or an MLflow tracking URI (auto: tracking/ in "
        "the run directory, or in the sweep folder for a sweep point)",
    )


@dataclass(frozen=True)
class DataConfig(Section):
    dataset: str = param(
        "digits", "digits (bundled, offline), cifar10 or cifar100", choices=tuple(DATASET_CLASSES)
    )
    data_dir: str = param("data", "where CIFAR lives or is downloaded to")
    download: bool = param(True, "download CIFAR into data_dir when it is missing")
    partition: str = param("pathological", "label skew across clients", choices=PARTITIONS)
    classes_per_client: int = param(2, "pathological: classes each client holds", ge=1)
    dirichlet_alpha: float = param(0.5, "dirichlet: concentration; smaller means more label skew", gt=0)
    test_fraction: float = param(0.25, "digits only: share held out for local tests", gt=0, lt=1)
    max_train_samples: int = param(
        0,
        "cap each client's training samples at this many, drawn per class in proportion to its "
        "label mix (0: no cap; test splits are kept whole)",
        ge=0,
    )
    val_fraction: float = param(
        0.1,
        "share of each client's training samples held out for validation, what reports and tune "
        "select on (test accuracy is only reported); 0: none, runs as before it existed",
        ge=0,
        le=0.5,
        why="holding out more than half leaves too little to train on",
    )
    augment: bool = param(True, "random crop (and flip where valid) on training batches")


@dataclass(frozen=True)
class FederationConfig(Section):
    num_clients: int = param(10, "number of clients", ge=1, le=MAX_CLIENTS, why=CLIENTS_WHY)
    fraction: float = param(1.0, "share of clients sampled each round", gt=0, le=1)
    rounds: int = param(20, "communication rounds", ge=1, le=MAX_ROUNDS, why=TOO_LONG)
    eval_every: int = param(1, "evaluate all clients every N rounds (and after the last)", ge=1)
    eval_clients: int = param(
        EVAL_CLIENTS,
        "clients evaluated in rounds before the last: a seeded panel of this many, the same "
        "every round (all clients when the federation is no larger; 0: all); the last round "
        "evaluates every client",
        ge=0,
    )
    hot_clients: int = param(
        0,
        "clients whose private state stays in memory; the least recently used beyond that "
        "live on disk in the run folder, with identical results (0: all in memory)",
        ge=0,
    )
    models: tuple[str, ...] = param(
        GROUPS["cnn"],
        f"zoo models assigned round-robin to clients, or a group: {', '.join(GROUPS)} "
        "(`python -m workbench params` lists their members)",
        choices=tuple(MODELS) + tuple(GROUPS),
    )


@dataclass(frozen=True)
class TrainConfig(Section):
    model_epochs: int = param(
        1, "local epochs training the private model per round", ge=1, le=MAX_EPOCHS, why=TOO_LONG
    )
    batch_size: int = param(
        10,
        "training batch size (10: the median client of the default run, 121 training images, takes "
        "13 optimizer steps per phase and round; 64 was the default before issue 27)",
        ge=1,
    )
    lr: float = param(0.01, "SGD learning rate of the private model", gt=0)
    momentum: float = param(0.9, "SGD momentum", ge=0, lt=1)
    weight_decay: float = param(1e-3, "SGD weight decay", ge=0)
    eval_batch_size: int = param(512, "evaluation batch size", ge=1)


@dataclass(frozen=True)
class ServerConfig(Section):
    aggregator: str = param(
        "mean",
        "how the server combines uploads: mean (sample-weighted), "
        "norm_bounded, median or trimmed_mean (coordinate-wise; "
        "class-wise for FD and FedProto)",
        choices=AGGREGATORS,
    )
    max_update_norm: float = param(
        1.0,
        "norm_bounded: the largest L2 distance one client's upload "
        "may lie from the global state it started from",
        gt=0,
    )
    trim_fraction: float = param(
        0.2, "trimmed_mean: share of clients dropped at each end, per coordinate", ge=0, lt=0.5
    )


@dataclass(frozen=True)
class AttackConfig(Section):
    malicious_clients: float = param(
        0.0,
        "clients that poison their uploads (fixed by the seed): a count, or a fraction when below 1",
        ge=0,
        le=MAX_CLIENTS,
        why=CLIENTS_WHY,
    )
    attack: str = param(
        "none",
        "what malicious clients do to their uploads: none, scale "
        "(update × attack_scale), sign_flip or noise (+ N(0, attack_std²))",
        choices=ATTACKS,
    )
    attack_scale: float = param(
        -10.0,
        "scale: the factor applied to a malicious update",
        ge=-1e12,
        le=1e12,
        why="larger factors overflow float32 uploads",
    )
    attack_std: float = param(
        1.0,
        "noise: standard deviation added to every coordinate",
        ge=0,
        le=1e12,
        why="larger noise overflows float32 uploads",
    )


@dataclass(frozen=True)
class DevicesConfig(Section):
    dropout: float = param(
        0.0,
        "probability that a sampled client drops out of a round (seeded; 0: every client answers)",
        ge=0,
        lt=1,
    )
    device_flops: float = param(
        0.0,
        "median compute of a client's device in FLOP/s, which turns each client's exact FLOPs and "
        "bytes into simulated seconds (0: no simulated clock)",
        ge=0,
    )
    device_bandwidth: float = param(
        1e6, "median bandwidth of a client's device in bytes/s, up and down (with device_flops)", gt=0
    )
    device_profile: str = param(
        "same",
        "how devices differ (with device_flops): same (all at the medians), lognormal (compute "
        "and bandwidth each times exp(N(0, device_sigma²))) or tiers (slow 0.25×, medium 1×, "
        "fast 4×, equally likely)",
        choices=DEVICE_PROFILES,
    )
    device_sigma: float = param(1.0, "lognormal: spread of the log of device speeds", gt=0, le=5)
    round_deadline: float = param(
        0.0,
        "simulated seconds after which a round closes without the uploads still missing "
        "(needs device_flops; 0: wait for every upload)",
        ge=0,
    )
    late_uploads: str = param(
        "drop",
        "an upload past the deadline: drop, or next_round (aggregated with the next round's)",
        choices=LATE_UPLOADS,
    )


@dataclass(frozen=True)
class PrivacyConfig(Section):
    """Client-level differential privacy on uploads (`workbench.loop.privacy`)."""

    prefix: ClassVar[str] = "dp_"
    noise_multiplier: float = param(
        0.0,
        "client-level DP: Gaussian noise std as a multiple of dp_clip, ε accounted per round "
        "(0: no noise; needs dp_clip, extra: privacy)",
        ge=0,
        le=1e6,
        why="larger noise overflows float32 uploads",
    )
    clip: float = param(
        0.0, "client-level DP: the L2 norm each client's update is clipped to (0: no clipping)", ge=0
    )
    delta: float = param(1e-5, "client-level DP: the δ at which ε is reported", gt=0, lt=1)
    mode: str = param(
        "central",
        "central: the server clips, averages uniformly and adds noise to the sum; local: each "
        "client clips and adds noise to its own update before it leaves",
        choices=DP_MODES,
    )


RUN_SECTIONS: dict[str, type[Section]] = {
    "run": RunConfig,
    "data": DataConfig,
    "federation": FederationConfig,
    "train": TrainConfig,
    "server": ServerConfig,
    "attack": AttackConfig,
    "devices": DevicesConfig,
    "privacy": PrivacyConfig,
}


@dataclass(frozen=True)
class ExperimentConfig:
    """The run's sections plus every registered method's section: `config.params_of("fedlora")`
    (`Algorithm.params`, typed by the method: `FedLoRA.params_in(config).rank`)."""

    run: RunConfig
    data: DataConfig
    federation: FederationConfig
    train: TrainConfig
    server: ServerConfig
    attack: AttackConfig
    devices: DevicesConfig
    privacy: PrivacyConfig
    methods: tuple[tuple[str, Section], ...] = ()  # (method name, its Params), registry order

    def params_of(self, method: str) -> Section:
        """A registered method's own section (its `Params`); KeyError naming those there are."""
        for name, section in self.methods:
            if name == method:
                return section
        having = [name for name, _ in self.methods]
        raise KeyError(f"this config holds no section of method {method!r}; it holds {having}")

    @property
    def num_classes(self) -> int:
        """Classes of the configured dataset."""
        return DATASET_CLASSES[self.data.dataset]

    def client_models(self) -> list[str]:
        """Architecture of each client, as the configured method assigns them."""
        return REGISTRY[self.run.algorithm].client_models(self)

    def sections(self) -> list[Section]:
        """Every section, run sections first."""
        return [getattr(self, s) for s in RUN_SECTIONS] + [s for _, s in self.methods]

    def to_flat(self) -> dict[str, Any]:
        """The flat parameters that rebuild this config (JSON-friendly: tuples become lists)."""
        flat = {}
        for obj in self.sections():
            for f in fields(obj):
                value = getattr(obj, f.name)
                flat[obj.prefix + f.name] = list(value) if isinstance(value, tuple) else value
        return flat

    def replace(self, **flat: Any) -> ExperimentConfig:
        """A new config with some flat parameters changed, validated like any other."""
        return build_config({**self.to_flat(), **flat})


def section_classes() -> dict[str, type[Section]]:
    """Every section class by name: the run's, then each registered method's that has knobs."""
    methods = {name: cls.Params for name, cls in REGISTRY.items() if cls.Params is not None}
    return {**RUN_SECTIONS, **methods}


def parameter_table() -> dict[str, tuple[type[Section], dataclasses.Field]]:
    """Every flat parameter name → (its section class, its field)."""
    table: dict[str, tuple[type[Section], dataclasses.Field]] = {}
    for cls in section_classes().values():
        for f in fields(cls):
            name = cls.prefix + f.name
            if name in table:
                raise ConfigError(
                    f"parameter {name!r} is declared by both {table[name][0].__name__} "
                    f"and {cls.__name__}; give the method's Params a prefix"
                )
            table[name] = (cls, f)
    return table


def defaults() -> dict[str, Any]:
    """Flat parameter names with their default values."""
    return build_config({}).to_flat()


def build_config(flat: Mapping[str, Any]) -> ExperimentConfig:
    """The one strict call: flat parameters → validated, frozen ExperimentConfig."""
    table = parameter_table()
    unknown = sorted(set(flat) - set(table))
    if unknown:
        raise unknown_names(unknown, table)
    classes = section_classes()
    values: dict[str, dict[str, Any]] = {section: {} for section in classes}
    section_of = {cls: section for section, cls in classes.items()}
    for name, raw in flat.items():
        cls, f = table[name]
        value = coerce(name, raw, get_type_hints(cls)[f.name])
        check_range(name, value, f.metadata)
        if cls is FederationConfig and f.name == "models":
            value = expand_models(value)  # a group stands for its members
        values[section_of[cls]][f.name] = value
    built = {s: classes[s](**v) for s, v in values.items()}
    run_sections: dict[str, Any] = {s: built.pop(s) for s in RUN_SECTIONS}  # each its own class
    config = ExperimentConfig(**run_sections, methods=tuple(built.items()))
    check_consistency(config)
    return config


# parameters added since some folders were written whose absence means another value than
# today's default: a run stored before validation existed held no validation split
ABSENT_MEANS: dict[str, Any] = {"val_fraction": 0.0}


def stored_config(flat: Mapping[str, Any]) -> dict[str, Any]:
    """A flat config stored by an earlier version (a run folder, a checkpoint) as today's
    parameters read it: one added since is at its default, so comparing it with a config of
    today finds only values that really differ. One that no longer builds (a parameter removed
    or a value refused since) is returned as stored, so the comparison shows what changed."""
    flat = {**{k: v for k, v in ABSENT_MEANS.items() if k not in flat}, **flat}
    try:
        return build_config(flat).to_flat()
    except ConfigError:
        return dict(flat)


def check_consistency(config: ExperimentConfig) -> None:
    """Cross-parameter rules of the run, then the chosen method's own checks."""
    classes = config.num_classes
    if config.data.partition == "pathological" and config.data.classes_per_client > classes:
        raise ConfigError(
            f"parameter classes_per_client={config.data.classes_per_client} is out of range: "
            f"{config.data.dataset} has {classes} classes"
        )
    cap = config.data.max_train_samples
    if config.data.partition == "pathological" and 0 < cap < config.data.classes_per_client:
        raise ConfigError(
            f"parameter max_train_samples={cap} is out of range: each client holds "
            f"classes_per_client={config.data.classes_per_client} classes, so give 0 (no cap) or "
            f"at least {config.data.classes_per_client}"
        )
    if config.federation.eval_every > config.federation.rounds:
        raise ConfigError(
            f"parameter eval_every={config.federation.eval_every} is out of range: "
            f"must be <= rounds={config.federation.rounds}"
        )
    malicious_count(config.federation.num_clients, config.attack.malicious_clients)
    check_devices(config.devices)
    check_privacy(config)
    REGISTRY[config.run.algorithm].check(config)


def check_devices(devices: DevicesConfig) -> None:
    """A deadline or a device profile means nothing without a clock to measure it by."""
    if devices.device_flops > 0:
        return
    if devices.round_deadline > 0:
        raise ConfigError(
            f"parameter round_deadline={devices.round_deadline:g} needs a simulated clock: give "
            "device_flops (a device's FLOP/s, e.g. 1e10) too, or round_deadline=0"
        )
    if devices.device_profile != "same":
        raise ConfigError(
            f"parameter device_profile={devices.device_profile!r} needs a simulated clock: give "
            "device_flops (a device's FLOP/s, e.g. 1e10) too, or device_profile='same'"
        )


def check_privacy(config: ExperimentConfig) -> None:
    """Client-level DP: noise needs a clip bound, central noise a plain sum, and the method an
    upload the mechanism can bound (`Algorithm.dp_refusal`)."""
    dp = config.privacy
    if dp.noise_multiplier > 0 and dp.clip == 0:
        raise ConfigError(
            f"parameter dp_noise_multiplier={dp.noise_multiplier:g} needs dp_clip > 0: the noise is "
            "calibrated to the clip bound, and an unclipped update has no bound"
        )
    if dp.clip == 0:
        return
    why = REGISTRY[config.run.algorithm].dp_refusal
    if why:
        raise ConfigError(
            f"parameter dp_clip={dp.clip:g} cannot be used with algorithm={config.run.algorithm!r}: "
            f"{why}; client-level DP covers {', '.join(n for n, c in REGISTRY.items() if not c.dp_refusal)}"
        )
    if dp.mode == "central" and config.server.aggregator != "mean":
        raise ConfigError(
            f"parameter aggregator={config.server.aggregator!r} cannot be used with dp_mode='central': "
            "the noise is calibrated to a sum of clipped updates; use aggregator='mean' or "
            "dp_mode='local'"
        )


def malicious_count(num_clients: int, amount: float) -> int:
    """How many clients `malicious_clients` means: a fraction below 1 (rounded, halves up) or a
    whole count up to num_clients."""
    if not 0 <= amount <= num_clients or (amount >= 1 and not float(amount).is_integer()):
        raise ConfigError(
            f"parameter malicious_clients={amount:g} is out of range: give a "
            f"fraction in [0, 1) or a whole count from 1 to num_clients={num_clients}"
        )
    return int(math.floor(amount * num_clients + 0.5)) if amount < 1 else int(amount)
