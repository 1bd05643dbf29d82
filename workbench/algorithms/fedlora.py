"""FedLoRA: model-heterogeneous personalized FL by sharing a homogeneous LoRA adapter.

Yi et al., "FedLoRA: Model-Heterogeneous Personalized Federated Learning with LoRA Tuning",
arXiv:2310.13283. Reconstructed from the abstract (docs/architecture.md): each client alternates
(1) adapter frozen, train the private model on (1−μ)·CE(local) + μ·CE(local ⊕ adapter), and
(2) model frozen, train the adapter on CE(local ⊕ adapter); only the adapter is uploaded and
the server averages adapters weighted by training-sample counts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from workbench.algorithms.base import Algorithm, Client, Payload, Seed, derived_seed
from workbench.core.lazy import lazy
from workbench.core.params import ConfigError, Section, param
from workbench.core.zoo import linear_shapes

if TYPE_CHECKING:
    from torch import Tensor, nn

    from workbench.config import ExperimentConfig
    from workbench.core.training import LossFn, PhaseStats

torch = lazy("torch")
F = lazy("torch.nn.functional")
adapters = lazy("workbench.core.adapters")

LORA_TARGETS = ("head", "fc1", "fc2")


@dataclass(frozen=True)
class FedLoRAParams(Section):
    rank: int = param(4, "LoRA rank r", ge=1)
    lora_alpha: float = param(8.0, "LoRA scale numerator: the branch is scaled by alpha/r", gt=0)
    mu: float = param(0.5, "weight of the adapter-on loss while training the model", ge=0, le=1)
    adapter_epochs: int = param(1, "local epochs training the adapter per round", ge=1)
    adapter_lr: float = param(0.01, "SGD learning rate of the adapter", gt=0)
    lora_targets: tuple[str, ...] = param(("head",), "Linear layers carrying the adapter",
                                          choices=LORA_TARGETS)


def check_adapter_targets(models: list[str], num_classes: int, targets: tuple[str, ...],
                          rank: int) -> None:
    """Refuse targets whose shapes differ across the clients' models, or a rank they cannot hold."""
    if len(set(targets)) != len(targets):
        raise ConfigError(f"parameter lora_targets={','.join(targets)!r} names a layer twice; "
                          f"list each of {list(LORA_TARGETS)} at most once")
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


class FedLoRA(Algorithm):
    name = "fedlora"
    Params = FedLoRAParams
    evaluation_is_local = True

    @classmethod
    def check(cls, config: ExperimentConfig) -> None:
        """The adapter must have one shape on every client's model."""
        lora = config.fedlora
        check_adapter_targets(sorted(set(config.client_models())), config.num_classes,
                              lora.lora_targets, lora.rank)

    def setup_client(self, client: Client) -> None:
        super().setup_client(client)
        lora = self.params
        # same seed as θ⁰, so a client that is never sampled still holds the initial adapter
        client.state["model"] = adapters.inject_lora(client.state["model"], lora.lora_targets, lora.rank,
                                            lora.lora_alpha, seed=self.adapter_seed())

    def initial_server_state(self) -> dict[str, Tensor]:
        """θ⁰: A from PEFT's initialisation under the run seed, B = 0."""
        lora = self.params
        model = adapters.inject_lora(self.build(self.config.client_models()[0], seed=0), lora.lora_targets,
                            lora.rank, lora.lora_alpha, seed=self.adapter_seed())
        return adapters.adapter_state(model)

    def adapter_seed(self) -> int:
        """Seed of the adapter's initialisation (identical on server and clients)."""
        return derived_seed(self.config.run.seed, 0, Seed.ADAPTER)

    def receive(self, client: Client, payload: Payload) -> None:
        adapters.load_adapter_state(client.state["model"], payload)

    def upload(self, client: Client) -> Payload:
        return adapters.adapter_state(client.state["model"])

    def local_update(self, client: Client, generator: torch.Generator) -> PhaseStats:
        first = self.train_model(client, generator)
        second = self.train_adapter(client, generator)
        return first.then(second)

    def train_model(self, client: Client, generator: torch.Generator) -> PhaseStats:
        """Phase 1: adapter frozen, private model trained on the μ-mixed loss."""
        model = client.state["model"]
        adapters.set_trainable(model, private=True, adapter=False)
        return self.phase(client, [model], self.model_loss(model), generator,
                          self.config.train.model_epochs, self.model_sgd(), "model")

    def train_adapter(self, client: Client, generator: torch.Generator) -> PhaseStats:
        """Phase 2: private model frozen, adapter trained on CE of the combined output."""
        model, lora = client.state["model"], self.params
        adapters.set_trainable(model, private=False, adapter=True)
        sgd = self.model_sgd(lr=lora.adapter_lr)
        return self.phase(client, [model], lambda x, y: F.cross_entropy(model(x), y), generator,
                          lora.adapter_epochs, sgd, "adapter")

    def model_loss(self, model: nn.Module) -> LossFn:
        """(1−μ)·CE(F_k(x)) + μ·CE(F_k(x) ⊕ θ(x)); a zero-weighted term is not computed at all."""
        mu = self.params.mu
        head_only = self.params.lora_targets == ("head",)

        def loss(x: Tensor, y: Tensor) -> Tensor:
            if mu == 0.0:
                with adapters.adapter_disabled(model):
                    return F.cross_entropy(model(x), y)
            if mu == 1.0:
                return F.cross_entropy(model(x), y)
            if head_only:  # the representation is shared by both outputs: compute it once
                z = model.features(x)  # B, 500
                local, combined = model.head.get_base_layer()(z), model.head(z)  # B, C each
            else:
                with adapters.adapter_disabled(model):
                    local = model(x)
                combined = model(x)
            return (1 - mu) * F.cross_entropy(local, y) + mu * F.cross_entropy(combined, y)

        return loss
