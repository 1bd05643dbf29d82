"""FML: deep mutual learning between a private model and a shared ("meme") model.

Shen et al., "Federated Mutual Learning", arXiv:2006.16765. Each client keeps its private zoo
model and a copy of the shared model (architecture `fml_shared_model`). Both are trained at
once on the same batches: private α·CE(p, y) + (1−α)·KL(softmax(m) ‖ softmax(p)), shared
β·CE(m, y) + (1−β)·KL(softmax(p) ‖ softmax(m)), each KL's target detached. Only the shared
model travels; the server averages it weighted by training-sample counts. The private model
is evaluated. One SGD optimizer over both models with the private model's settings stands in
for the paper's two optimizers (SGD is per-parameter, so the updates are the same); the
reported training loss is the sum of both models' losses.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from workbench.algorithms.base import (
    Algorithm,
    Client,
    Payload,
    derived_seed,
    load_shared,
    state_copy,
)
from workbench.algorithms.fedavg import FedAvg
from workbench.core.lazy import lazy
from workbench.core.params import Search, Section, param
from workbench.core.zoo import MODELS

if TYPE_CHECKING:
    from torch import Tensor

    from workbench.core.training import LossFn, PhaseStats

if TYPE_CHECKING:
    import torch
    import torch.nn.functional as F
else:
    torch = lazy("torch")
    F = lazy("torch.nn.functional")


@dataclass(frozen=True)
class FMLParams(Section):
    prefix = "fml_"
    alpha: float = param(0.5, "private model: weight of CE vs KL toward the shared model", ge=0, le=1)
    beta: float = param(0.5, "shared model: weight of CE vs KL toward the private model", ge=0, le=1)
    shared_model: str = param("cnn5", "architecture of the shared model", choices=tuple(MODELS))


def distill_kl(student: Tensor, teacher: Tensor) -> Tensor:
    """KL(softmax(teacher) ‖ softmax(student)) averaged over the batch; the teacher is detached."""
    return F.kl_div(F.log_softmax(student, 1), F.softmax(teacher.detach(), 1), reduction="batchmean")


def mutual_losses(p: Tensor, m: Tensor, y: Tensor, alpha: float, beta: float) -> tuple[Tensor, Tensor]:
    """(private loss, shared loss) from private logits p and shared logits m, both B × C."""
    private = alpha * F.cross_entropy(p, y) + (1 - alpha) * distill_kl(p, m)
    shared = beta * F.cross_entropy(m, y) + (1 - beta) * distill_kl(m, p)
    return private, shared


class FML(Algorithm[FMLParams]):
    name = "fml"
    title = "FML"
    dp_refusal = ""  # the upload mirrors the global state: the update is upload − download
    search = {"fml_alpha": Search(0.0, 1.0), "fml_beta": Search(0.0, 1.0)}
    Params = FMLParams
    evaluation_is_local = True
    seed_purposes = FedAvg.seed_purposes  # the initial shared model: FedAvg's θ⁰ purpose

    def shared_seed(self) -> int:
        """Seed of the initial shared model (identical on server and clients)."""
        return derived_seed(self.config.run.seed, 0, self.seed_purposes["shared_model"])

    def setup_client(self, client: Client) -> None:
        super().setup_client(client)
        client.state["shared"] = self.build(self.params.shared_model, self.shared_seed())

    def initial_server_state(self) -> dict[str, Tensor]:
        return state_copy(self.build(self.params.shared_model, self.shared_seed()))

    def receive(self, client: Client, payload: Payload) -> None:
        load_shared(client.state["shared"], payload)

    def local_update(self, client: Client, generator: torch.Generator) -> PhaseStats:
        modules = [client.state["model"], client.state["shared"]]
        return self.phase(
            client,
            modules,
            self.mutual_loss(client),
            generator,
            self.config.train.model_epochs,
            self.model_sgd(),
            "mutual",
        )

    def mutual_loss(self, client: Client) -> LossFn:
        """Sum of both models' losses: the detached KL targets keep their gradients apart."""
        private, shared, fml = client.state["model"], client.state["shared"], self.params

        def loss(x: Tensor, y: Tensor) -> Tensor:
            first, second = mutual_losses(private(x), shared(x), y, fml.alpha, fml.beta)
            return first + second

        return loss

    def upload(self, client: Client) -> Payload:
        return state_copy(client.state["shared"])
