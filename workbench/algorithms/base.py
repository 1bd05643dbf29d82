"""The hooks an algorithm overrides; the round loop in `workbench.loop` calls them.

An algorithm is one module: a subclass of `Algorithm` with its `name`, its parameter section
(`Params`), the traits the workbench asks it instead of branching on its name (`title`,
`kernel_imports`, `heatmap`, ...), the facts it owns (`seed_purposes`, `diagnostics`: its
evaluation columns and their warnings), its config checks, its client-model choice, how an upload is
validated, and the round hooks where it differs from the defaults (a private model per client,
CE training, nothing sent). Register it with `workbench.algorithms.register`. Method modules are imported to
read their parameters before any work starts, so heavy modules are bound with `lazy(...)`.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Generic, TypeVar, cast

from workbench.core.diagnostics import MethodDiagnostics
from workbench.core.facts import Payload, Seed
from workbench.core.lazy import lazy
from workbench.core.params import Search, Section
from workbench.core.zoo import assign_models

if TYPE_CHECKING:
    from torch import Tensor, nn

    from workbench.config import ExperimentConfig
    from workbench.core.data import ClientData, Normalizer, SharedClientData
    from workbench.core.results import Evaluation
    from workbench.core.training import Batches, LossFn, LrOf, PhaseStats, Probe, SGDSpec

if TYPE_CHECKING:
    import numpy as np
    import torch
    import torch.nn.functional as F

    from workbench.core import accounting, aggregation, data, models, training
else:
    np = lazy("numpy")
    torch = lazy("torch")
    F = lazy("torch.nn.functional")
    accounting = lazy("workbench.core.accounting")
    aggregation = lazy("workbench.core.aggregation")
    data = lazy("workbench.core.data")
    models = lazy("workbench.core.models")
    training = lazy("workbench.core.training")

__all__ = [
    "Algorithm",
    "Client",
    "Environment",
    "Knob",
    "KnobGrid",
    "Payload",
    "Search",
    "derived_seed",
    "mirrors",
    "load_shared",
    "private_norm_names",
    "state_copy",
    "Seed",
]


@dataclass
class Client:
    """One client: its identity, its data and whatever the algorithm keeps on it."""

    cid: int
    model_name: str
    data: ClientData | SharedClientData  # its own tensors, or indices into shared ones
    state: dict[str, Any] = field(default_factory=dict)
    # test accuracy and loss, diagnostics, validation accuracy and loss of the current state;
    # None once it trains again
    evaluation: Evaluation | None = None


@dataclass(frozen=True)
class Environment:
    """What every algorithm needs from the run besides the config."""

    num_classes: int
    device: torch.device
    normalize: Normalizer
    flip: bool

    @classmethod
    def without_data(cls, num_classes: int, device: torch.device) -> Environment:
        """For synthetic data and servers: a fixed normalizer, no flips."""
        return cls(
            num_classes=num_classes,
            device=device,
            flip=False,
            normalize=data.Normalizer((0.5,) * 3, (0.25,) * 3, device),
        )


def private_norm_names(model: nn.Module) -> frozenset[str]:
    """State names of the model's BatchNorm layers (affine weights and running statistics):
    they stay on the client, as FedBN keeps them; the CNNs have none."""
    return frozenset(
        f"{module}.{name}" if module else name
        for module, m in model.named_modules()
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)
        for name in m.state_dict()
    )


def state_copy(model: nn.Module) -> dict[str, Tensor]:
    """Detached copies of every shared tensor of a model's state: a whole model as a payload,
    less its normalisation layers (`private_norm_names`)."""
    private = private_norm_names(model)
    return {name: t.detach().clone() for name, t in model.state_dict().items() if name not in private}


def load_shared(model: nn.Module, payload: Mapping[str, Tensor]) -> None:
    """Load a `state_copy` payload: every shared tensor exactly, the private norms untouched."""
    missing, unexpected = model.load_state_dict(dict(payload), strict=False)
    if unexpected or not set(missing) <= private_norm_names(model):
        raise ValueError(
            f"payload does not match the model's shared state: missing "
            f"{sorted(set(missing) - private_norm_names(model))}, unexpected {sorted(unexpected)}"
        )


def mirrors(upload: Payload, down: Payload) -> bool:
    """Whether an upload mirrors what the client received: the same names and shapes."""
    return set(upload) == set(down) and all(down[n].shape == t.shape for n, t in upload.items())


def derived_seed(*parts: int) -> int:
    """A 63-bit seed derived from integers (run seed, round or client, …, a `Seed` purpose)."""
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(2, np.uint64)[0] >> 1)


@dataclass(frozen=True)
class Knob:
    """A method's parameter as reports write it: its flat name, a symbol, an axis title."""

    name: str  # the flat name, as swept (e.g. "mu", "smooth_eps")
    symbol: str = ""  # in titles and hovers; empty: the name
    axis: str = ""  # the axis title; empty: the symbol

    def __post_init__(self) -> None:
        object.__setattr__(self, "symbol", self.symbol or self.name)
        object.__setattr__(self, "axis", self.axis or self.symbol)


@dataclass(frozen=True)
class KnobGrid:
    """Two knobs the report draws as an accuracy heatmap (rows × columns) when both are swept."""

    rows: Knob
    columns: Knob
    heading: str = ""  # the report section's heading after the title; empty: "rows × columns"
    about: str = ""  # what the two knobs do, one sentence under the heading

    def __post_init__(self) -> None:
        object.__setattr__(self, "heading", self.heading or f"{self.rows.symbol} × {self.columns.symbol}")


P = TypeVar("P", bound="Section | None")  # a method's own section type (None: it has no knobs)


class Algorithm(Generic[P]):
    """Base algorithm: a private model per client, CE training, no communication. A method
    names its section type, `class FedLoRA(Algorithm[FedLoRAParams])`, so `self.params.rank`
    is typed and leads to its declaration."""

    name: ClassVar[str] = "base"
    Params: ClassVar[type[Section] | None] = None  # the method's own knobs, if it has any
    # True when predict reads only the client's own state, so an evaluation stays valid until
    # the client trains again (the loop then skips re-evaluating idle clients); opt in per method
    evaluation_is_local: ClassVar[bool] = False
    # traits the workbench asks instead of branching on a name (declarations only, no torch):
    title: ClassVar[str] = "base"  # display name in reports; a subclass declaring none shows its name
    kernel_imports: ClassVar[tuple[str, ...]] = ()  # modules a sweep's warm kernels import ahead
    heatmap: ClassVar[KnobGrid | None] = None  # the report's accuracy heatmap over two knobs
    # what `tune` searches by default: flat knob name → range (a tuning spec may override them)
    search: ClassVar[Mapping[str, Search]] = {}
    # client-level DP (`workbench.loop.privacy`) clips upload − download, so it covers a method
    # whose upload mirrors the global state it was sent; otherwise why not (refused by dp_clip)
    dp_refusal: ClassVar[str] = "it uploads nothing, so no update leaves a client to privatize"
    # seeds of its own beside the generic `Seed` purposes: name → purpose number, passed to
    # `derived_seed` (the registry refuses a number or name that means something else elsewhere)
    seed_purposes: ClassVar[Mapping[str, int]] = {}
    # the columns its `evaluation_probe` reports, with their meanings, and the warnings they raise
    diagnostics: ClassVar[MethodDiagnostics] = MethodDiagnostics()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "title" not in vars(cls):  # a parent's title would name the parent in reports
            cls.title = cls.name

    def __init__(self, config: ExperimentConfig, env: Environment) -> None:
        self.config, self.env = config, env
        self.meter = accounting.FlopMeter()

    @property
    def params(self) -> P:
        """This method's own section of the config (None for a method without knobs)."""
        return self.params_in(self.config)

    @classmethod
    def params_in(cls, config: ExperimentConfig) -> P:
        """This method's section of `config`, for the class-level checks that have no instance."""
        return cast(P, config.params_of(cls.name) if cls.Params is not None else None)

    # ---- configuration (class-level: no data, no torch) ---------------------------------
    @classmethod
    def check(cls, config: ExperimentConfig) -> None:
        """Refuse a config this method cannot run (raise ConfigError naming the parameter)."""

    @classmethod
    def search_limits(cls, config: ExperimentConfig) -> dict[str, tuple[float, str]]:
        """The largest value each searched knob may take at this setting, with why (e.g.
        FedLoRA's rank: the adapter site's width); `tune` narrows a declared range to it and
        refuses a spec's range above it. None by default."""
        return {}

    @classmethod
    def client_models(cls, config: ExperimentConfig) -> list[str]:
        """Each client's architecture: the zoo round-robin."""
        return assign_models(config.federation.models, config.federation.num_clients)

    # ---- set-up -------------------------------------------------------------------------
    def build(self, model_name: str, seed: int) -> nn.Module:
        """A zoo model on the run's device."""
        return models.build_model(model_name, self.env.num_classes, seed).to(self.env.device)

    def setup_client(self, client: Client) -> None:
        """Create the client's private state."""
        seed = derived_seed(self.config.run.seed, client.cid, Seed.CLIENT_MODEL)
        client.state["model"] = self.build(client.model_name, seed)

    def initial_server_state(self) -> dict[str, Tensor]:
        """The server's global state before round 1."""
        return {}

    # ---- one round ----------------------------------------------------------------------
    def begin_round(self, round_: int) -> None:
        """Called before a round's sampling on the server, and before training on a client."""

    def broadcast(self, server_state: Payload, client: Client) -> Payload:
        """What the server sends a sampled client at the start of a round."""
        return server_state

    def receive(self, client: Client, payload: Payload) -> None:
        """Apply the downloaded payload on the client."""

    def local_update(self, client: Client, generator: torch.Generator) -> PhaseStats:
        """Local training of one round."""
        model = client.state["model"]
        return self.phase(
            client,
            [model],
            lambda x, y: F.cross_entropy(model(x), y),
            generator,
            self.config.train.model_epochs,
            self.model_sgd(),
            "model",
        )

    def upload(self, client: Client) -> Payload:
        """What the client sends to the server after local training."""
        return {}

    def upload_reference(self, server_state: Payload) -> Payload:
        """What an honest upload looks like (keys, shapes, dtypes): by default the global state."""
        return server_state

    def validate_upload(self, cid: int, upload: Payload, server_state: Payload) -> None:
        """Refuse a malformed upload (InvalidUpdateError naming the client and the tensor)."""
        aggregation.validate_update(cid, upload, self.upload_reference(server_state))

    def aggregate(
        self, server_state: Payload, uploads: Mapping[int, Payload], weights: Mapping[int, float]
    ) -> dict[str, Tensor]:
        """New global state from the round's uploads by the configured rule (default: the
        sample-weighted average; norm_bounded measures distances from the global state)."""
        if not uploads or not any(uploads.values()):
            return dict(server_state)
        return aggregation.aggregate_by(
            self.rule(), uploads, weights, reference=server_state or None, center=server_state or None
        )

    def rule(self) -> aggregation.Rule:
        """The configured aggregation rule (`aggregator` and its knobs)."""
        server = self.config.server
        return aggregation.Rule(server.aggregator, server.max_update_norm, server.trim_fraction)

    def poisoned(
        self,
        client: Client,
        upload: Payload,
        down: Payload,
        attack: Callable[[Payload, Payload | None], dict[str, Tensor]],
    ) -> Payload:
        """A malicious client's upload: the attack acts on the update from what the client
        received where the upload mirrors it (same names and shapes), else on the upload."""
        return attack(upload, down if mirrors(upload, down) else None)

    def update_norm(self, client: Client, upload: Payload, down: Payload) -> float:
        """L2 norm of the update an upload carries over its floating tensors: upload − download
        where the upload mirrors the download (as `poisoned` decides), else the upload itself;
        NaN when nothing is sent."""
        if not upload:
            return math.nan
        return accounting.update_l2(upload, down if mirrors(upload, down) else {})

    # ---- evaluation ---------------------------------------------------------------------
    def predict(self, client: Client, x: Tensor) -> Tensor:
        """Logits (or scores) the client's deployed model gives a batch."""
        return client.state["model"](x)

    def evaluation_probe(self, client: Client) -> Probe:
        """The client's evaluation pass: its deployed model's logits per test batch and the
        diagnostics this method measures on them (none by default; see `core.diagnostics`)."""
        return training.Probe(lambda x: self.predict(client, x))

    def eval_modules(self, client: Client) -> list[nn.Module]:
        """Modules to switch to eval mode before predicting."""
        return [m for m in client.state.values() if isinstance(m, torch.nn.Module)]

    # ---- checkpoints ---------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Server-side state kept outside the global payload (tensors and plain containers)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what state_dict returned."""

    # ---- helpers for subclasses ---------------------------------------------------------
    def model_sgd(self, lr: float | None = None) -> SGDSpec:
        """SGD settings of private-model training (optionally another learning rate)."""
        t = self.config.train
        return training.SGDSpec(
            lr=t.lr if lr is None else lr, momentum=t.momentum, weight_decay=t.weight_decay
        )

    def batches(self, client: Client, generator: torch.Generator) -> Batches:
        """A factory of one shuffled, augmented epoch over the client's training data."""
        d, t = client.data, self.config.train
        return lambda: data.train_batches(
            d.train_x,
            d.train_y,
            t.batch_size,
            generator,
            self.env.normalize,
            self.config.data.augment,
            self.env.flip,
        )

    def test_batches(self, client: Client) -> Iterator[tuple[Tensor, Tensor]]:
        """The client's local test split, normalized, in order."""
        d = client.data
        return data.eval_batches(d.test_x, d.test_y, self.config.train.eval_batch_size, self.env.normalize)

    def val_batches(self, client: Client) -> Iterator[tuple[Tensor, Tensor]]:
        """The client's validation split (held out of its training data), normalized, in order."""
        d = client.data
        return data.eval_batches(d.val_x, d.val_y, self.config.train.eval_batch_size, self.env.normalize)

    def class_statistics(
        self, client: Client, forward: Callable[[Tensor], Tensor], phase: str
    ) -> tuple[Tensor, Tensor, int]:
        """Per-class means of `forward` over the client's training data, class counts, and the
        pass's FLOPs (forward-only training work, counted once per batch shape)."""
        d = client.data
        outs, ys, flops = [], [], 0
        for m in self.eval_modules(client):
            m.eval()
        with torch.no_grad():
            for x, y in data.eval_batches(
                d.train_x, d.train_y, self.config.train.eval_batch_size, self.env.normalize
            ):
                key = (client.model_name, phase, tuple(x.shape))
                out, step = self.meter.step(key, lambda: forward(x))  # noqa: B023 (called at once)
                outs.append(out)  # B, d
                ys.append(y)
                flops += step
        means, counts = aggregation.class_means(torch.cat(outs), torch.cat(ys), self.env.num_classes)
        return means, counts, flops

    def phase(
        self,
        client: Client,
        modules: list[nn.Module],
        loss_fn: LossFn,
        generator: torch.Generator,
        epochs: int,
        sgd: SGDSpec,
        phase: str,
        lr_of: LrOf | None = None,
    ) -> PhaseStats:
        """Run one training phase, counting FLOPs per (architecture, phase, batch shape) and its
        optimizer steps under the phase's name; `lr_of` gives chosen parameters their own
        learning rate."""
        stats = training.run_phase(
            modules,
            loss_fn,
            self.batches(client, generator),
            epochs,
            sgd,
            self.meter,
            (client.model_name, phase),
            lr_of,
        )
        return dataclasses.replace(stats, phase_steps={phase: stats.steps})
