"""FedLoRA: model-heterogeneous personalized FL by sharing a homogeneous LoRA adapter.

Yi et al., "FedLoRA: Model-Heterogeneous Personalized Federated Learning with LoRA Tuning",
arXiv:2310.13283. Reconstructed from the abstract (DESIGN.md §2): each client alternates
(1) adapter frozen, train the private model on (1−μ)·CE(local) + μ·CE(local ⊕ adapter), and
(2) model frozen, train the adapter on CE(local ⊕ adapter); only the adapter is uploaded and
the server averages adapters weighted by training-sample counts.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from workbench.core.adapters import (adapter_disabled, adapter_state, inject_lora, load_adapter_state,
                                set_trainable)
from workbench.algorithms.base import Algorithm, Client, Payload, derived_seed
from workbench.core.training import PhaseStats, SGDSpec


class FedLoRA(Algorithm):
    name = "fedlora"

    def setup_client(self, client: Client) -> None:
        super().setup_client(client)
        lora = self.config.fedlora
        # same seed as θ⁰, so a client that is never sampled still holds the initial adapter
        client.state["model"] = inject_lora(client.state["model"], lora.lora_targets, lora.rank,
                                            lora.lora_alpha, seed=self.adapter_seed())

    def initial_server_state(self) -> dict[str, Tensor]:
        """θ⁰: A from PEFT's initialisation under the run seed, B = 0."""
        lora = self.config.fedlora
        model = inject_lora(self.build(self.config.client_models()[0], seed=0), lora.lora_targets,
                            lora.rank, lora.lora_alpha, seed=self.adapter_seed())
        return adapter_state(model)

    def adapter_seed(self) -> int:
        """Seed of the adapter's initialisation (identical on server and clients)."""
        return derived_seed(self.config.run.seed, 0, 2)

    def receive(self, client: Client, payload: Payload) -> None:
        load_adapter_state(client.state["model"], payload)

    def upload(self, client: Client) -> Payload:
        return adapter_state(client.state["model"])

    def local_update(self, client: Client, generator: torch.Generator) -> PhaseStats:
        first = self.train_model(client, generator)
        second = self.train_adapter(client, generator)
        return PhaseStats(flops=first.flops + second.flops, steps=first.steps + second.steps,
                          mean_loss=second.mean_loss)

    def train_model(self, client: Client, generator: torch.Generator) -> PhaseStats:
        """Phase 1: adapter frozen, private model trained on the μ-mixed loss."""
        model = client.state["model"]
        set_trainable(model, private=True, adapter=False)
        return self.phase(client, [model], self.model_loss(model), generator,
                          self.config.train.model_epochs, self.model_sgd(), "model")

    def train_adapter(self, client: Client, generator: torch.Generator) -> PhaseStats:
        """Phase 2: private model frozen, adapter trained on CE of the combined output."""
        model, lora, train = client.state["model"], self.config.fedlora, self.config.train
        set_trainable(model, private=False, adapter=True)
        sgd = SGDSpec(lr=lora.adapter_lr, momentum=train.momentum, weight_decay=train.weight_decay)
        return self.phase(client, [model], lambda x, y: F.cross_entropy(model(x), y), generator,
                          lora.adapter_epochs, sgd, "adapter")

    def model_loss(self, model: torch.nn.Module):
        """(1−μ)·CE(F_k(x)) + μ·CE(F_k(x) ⊕ θ(x)); a zero-weighted term is not computed at all."""
        mu = self.config.fedlora.mu
        head_only = self.config.fedlora.lora_targets == ("head",)

        def loss(x: Tensor, y: Tensor) -> Tensor:
            if mu == 0.0:
                with adapter_disabled(model):
                    return F.cross_entropy(model(x), y)
            if mu == 1.0:
                return F.cross_entropy(model(x), y)
            if head_only:  # the representation is shared by both outputs: compute it once
                z = model.features(x)  # B, 500
                local, combined = model.head.get_base_layer()(z), model.head(z)  # B, C each
            else:
                with adapter_disabled(model):
                    local = model(x)
                combined = model(x)
            return (1 - mu) * F.cross_entropy(local, y) + mu * F.cross_entropy(combined, y)

        return loss
