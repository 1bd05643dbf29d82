"""FedLoRA: model-heterogeneous personalized FL by sharing a homogeneous LoRA adapter.

Yi et al., "FedLoRA: Model-Heterogeneous Personalized Federated Learning with LoRA Tuning",
arXiv:2310.13283. Reconstructed from the abstract (docs/architecture.md): each client alternates
(1) adapter frozen, train the private model on (1−μ)·CE(local) + μ·CE(local ⊕ adapter), and
(2) model frozen, train the adapter on CE(local ⊕ adapter); only the adapter's shared factors
are uploaded and the server averages them weighted by training-sample counts (or uniformly).

Where the adapter sits is reconstructed too (`adapter_placement`, `workbench.algorithms.fedlora.placements`):
beside the head, on fc2 sharing its 500-wide factor, or as a low-rank branch from the input into
the representation or the logits. μ may warm up linearly over the first rounds (`mu_schedule`),
and both phases may clip gradient norms (`max_grad_norm`) as the authors' sister code does. The
adapter's scaling, initialisation, learning rates, epochs and the deployed inference path are
variants of `workbench.algorithms.fedlora.params`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import TYPE_CHECKING

from workbench.algorithms.base import (
    Algorithm,
    Client,
    Environment,
    Knob,
    KnobGrid,
    Payload,
    derived_seed,
)
from workbench.algorithms.fedlora import advice
from workbench.algorithms.fedlora.params import FedLoRAParams, adapter_epochs, mu_at
from workbench.algorithms.fedlora.placements import placement_for
from workbench.core.lazy import lazy
from workbench.core.params import Search

if TYPE_CHECKING:
    from torch import Tensor, nn

    from workbench.config import ExperimentConfig
    from workbench.core.training import LossFn, LrOf, PhaseStats, Probe, SGDSpec

if TYPE_CHECKING:
    import torch
    import torch.nn.functional as F

    from workbench.algorithms.fedlora import adapters, probe
else:
    torch = lazy("torch")
    F = lazy("torch.nn.functional")
    adapters = lazy("workbench.algorithms.fedlora.adapters")
    probe = lazy("workbench.algorithms.fedlora.probe")


class FedLoRA(Algorithm[FedLoRAParams]):
    name = "fedlora"
    title = "FedLoRA"
    dp_refusal = ""  # the upload mirrors the global state: the update is upload − download
    # what tune searches: the paper's two knobs and the adapter's own learning rate
    search = {
        "rank": Search(1, 16, log=True),
        "mu": Search(0.0, 1.0),
        "adapter_lr": Search(1e-3, 1e-1, log=True),
    }
    Params = FedLoRAParams
    evaluation_is_local = True
    seed_purposes = {"adapter": 2}  # θ⁰, identical on server and clients
    diagnostics = advice.DIAGNOSTICS  # the adapter's contribution and weight norm, and their warnings
    kernel_imports = ("peft",)  # PEFT's LoRA layers import transformers: seconds per kernel
    heatmap = KnobGrid(
        Knob("rank", axis="LoRA rank r"),
        Knob("mu", "μ"),
        heading="adapter rank × μ",
        about="μ weighs the adapter branch in the private model's loss; the rank sets the "
        "adapter's size (and so its bytes).",
    )

    @classmethod
    def check(cls, config: ExperimentConfig) -> None:
        """The adapter must have one shape on every client's model, and a rank it can hold (a
        target named twice is refused with the parameter itself: `unique`)."""
        placement_for(cls.params_in(config)).check(sorted(set(config.client_models())), config.num_classes)

    @classmethod
    def search_limits(cls, config: ExperimentConfig) -> dict[str, tuple[float, str]]:
        """The rank may not exceed the adapter site's width (the head's: the number of classes)."""
        models = sorted(set(config.client_models()))
        return {"rank": placement_for(cls.params_in(config)).max_rank(models, config.num_classes)}

    def __init__(self, config: ExperimentConfig, env: Environment) -> None:
        super().__init__(config, env)
        self.placement = placement_for(self.params)  # where the adapter sits: build, forward, probe
        self.round: int | None = None  # set by begin_round; drives the μ schedule

    def attach(self, model: nn.Module) -> nn.Module:
        """The model with the configured adapter; the same seed everywhere, so every client
        (sampled or not) and the server start from the same shared factors."""
        return self.placement.attach(model, self.adapter_seed())

    def setup_client(self, client: Client) -> None:
        super().setup_client(client)
        client.state["model"] = self.attach(client.state["model"])

    def initial_server_state(self) -> dict[str, Tensor]:
        """θ⁰: the shared factors as `adapter_init` draws them under the run seed (nothing in
        the no-sharing ablation)."""
        if not self.params.share_adapter:
            return {}
        return adapters.adapter_state(self.attach(self.build(self.config.client_models()[0], seed=0)))

    def begin_round(self, round_: int) -> None:
        self.round = round_

    def adapter_seed(self) -> int:
        """Seed of the adapter's initialisation (identical on server and clients)."""
        return derived_seed(self.config.run.seed, 0, self.seed_purposes["adapter"])

    def receive(self, client: Client, payload: Payload) -> None:
        if self.params.share_adapter:
            adapters.load_adapter_state(client.state["model"], payload)

    def upload(self, client: Client) -> Payload:
        return adapters.adapter_state(client.state["model"]) if self.params.share_adapter else {}

    def aggregate(
        self, server_state: Payload, uploads: Mapping[int, Payload], weights: Mapping[int, float]
    ) -> dict[str, Tensor]:
        """The configured rule over the adapters, weighted by samples or uniformly."""
        if self.params.adapter_weights == "uniform":
            weights = dict.fromkeys(weights, 1.0)
        return super().aggregate(server_state, uploads, weights)

    def predict(self, client: Client, x: Tensor) -> Tensor:
        """The deployed model: the private model with its adapter, or alone (`private`)."""
        model = client.state["model"]
        if self.params.adapter_inference == "private":
            with adapters.adapter_disabled(model):
                return model(x)
        return model(x)

    def evaluation_probe(self, client: Client) -> Probe:
        """The deployed model's logits (`predict`); on the way, the adapter's contribution and
        weight norm, measured whichever output is deployed."""
        deployed = (
            None if self.params.adapter_inference == "combined" else (lambda x: self.predict(client, x))
        )
        return probe.AdapterProbe(self.placement, client.state["model"], deployed)

    def local_update(self, client: Client, generator: torch.Generator) -> PhaseStats:
        first = self.train_model(client, generator)
        second = self.train_adapter(client, generator)
        return first.then(second)

    def train_model(self, client: Client, generator: torch.Generator) -> PhaseStats:
        """Phase 1: adapter frozen, private model trained on the μ-mixed loss."""
        model = client.state["model"]
        adapters.set_trainable(model, private=True, adapter=False)
        return self.phase(
            client,
            [model],
            self.model_loss(model),
            generator,
            self.config.train.model_epochs,
            self.sgd(self.config.train.lr),
            "model",
        )

    def sgd(self, lr: float) -> SGDSpec:
        """A phase's SGD settings: the run's momentum and decay, FedLoRA's clipping."""
        return dataclasses.replace(self.model_sgd(lr=lr), max_grad_norm=self.params.max_grad_norm)

    def train_adapter(self, client: Client, generator: torch.Generator) -> PhaseStats:
        """Phase 2: private model frozen, adapter trained on CE of the combined output."""
        model, lora = client.state["model"], self.params
        adapters.set_trainable(model, private=False, adapter=True)
        return self.phase(
            client,
            [model],
            lambda x, y: F.cross_entropy(model(x), y),
            generator,
            adapter_epochs(lora, self.config.train.model_epochs),
            self.sgd(lora.adapter_lr),
            "adapter",
            self.lora_plus(model),
        )

    def lora_plus(self, model: nn.Module) -> LrOf | None:
        """LoRA+: B's factors at adapter_lr × lora_plus_ratio, the rest at adapter_lr (None at
        ratio 1: one rate, one parameter group)."""
        lora = self.params
        if lora.lora_plus_ratio == 1.0:
            return None
        fast = {id(p) for k, p in adapters.adapter_parameters(model).items() if k.endswith(".lora_B")}
        return lambda p: lora.adapter_lr * (lora.lora_plus_ratio if id(p) in fast else 1.0)

    def model_loss(self, model: nn.Module) -> LossFn:
        """(1−μ)·CE(F_k(x)) + μ·CE(F_k(x) ⊕ θ(x)) with this round's μ; a zero-weighted term is
        not computed at all, and what both outputs share is computed once."""
        mu = mu_at(self.params, self.round)

        def loss(x: Tensor, y: Tensor) -> Tensor:
            if mu == 0.0:
                with adapters.adapter_disabled(model):
                    return F.cross_entropy(model(x), y)
            if mu == 1.0:
                return F.cross_entropy(model(x), y)
            local, combined = self.placement.local_and_combined(model, x)  # B, C each
            return (1 - mu) * F.cross_entropy(local, y) + mu * F.cross_entropy(combined, y)

        return loss
