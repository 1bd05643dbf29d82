"""FedProto: clients share per-class mean representations (prototypes) instead of weights.

Tan et al., "FedProto: Federated Prototype Learning across Heterogeneous Clients", AAAI 2022,
arXiv:2105.00243. Each client trains its private model on CE(head(z), y) + λ·MSE(z, P[y]),
z = features(x) (500-d), P the global prototypes; the squared error is averaged over all B·500
entries, samples of a class without a global prototype contributing 0, as in the authors' code.
After training, one forward pass over the client's training data gives its per-class means,
uploaded with their counts; the server averages them per class, weighted by counts. Departures
from the authors' code: local prototypes come from that extra pass after training (the code
collects them during the training epochs), and predicting by prototype scores a class absent
from the global prototypes just below the sample's farthest present one (finite, so the
reported CE stays finite); a client that holds no prototypes yet predicts with its head.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from workbench.algorithms.base import Algorithm, Client, Payload
from workbench.core.lazy import lazy
from workbench.core.params import Search, Section, param
from workbench.core.zoo import REPRESENTATION_DIM

if TYPE_CHECKING:
    from torch import Tensor

    from workbench.core.models import ZooModel
    from workbench.core.training import LossFn, PhaseStats

if TYPE_CHECKING:
    import torch
    import torch.nn.functional as F

    from workbench.core import aggregation
else:
    torch = lazy("torch")
    F = lazy("torch.nn.functional")
    aggregation = lazy("workbench.core.aggregation")


@dataclass(frozen=True)
class FedProtoParams(Section):
    prefix = "fedproto_"
    weight: float = param(1.0, "lambda: weight of the distance to global prototypes", ge=0)
    predict: str = param(
        "prototype", "evaluate by nearest prototype or by the head", choices=("prototype", "head")
    )


def prototype_penalty(z: Tensor, y: Tensor, prototypes: Tensor, mask: Tensor) -> Tensor:
    """Mean over all B·d entries of (z − P[y])², rows whose class has no prototype counting 0."""
    has = mask[y]  # B
    target = torch.where(has[:, None], prototypes[y], z.detach())  # B, d
    return F.mse_loss(z, target)


def prototype_scores(z: Tensor, prototypes: Tensor, mask: Tensor) -> Tensor:
    """−‖z − P_c‖² per class; an absent class scores 1 below the sample's lowest present class."""
    dist = torch.cdist(z, prototypes, compute_mode="donot_use_mm_for_euclid_dist") ** 2  # B, C
    scores = -dist  # B, C
    floor = scores.masked_fill(~mask, float("inf")).amin(1, keepdim=True) - 1.0  # B, 1
    return torch.where(mask[None, :], scores, floor)  # B, C


class FedProto(Algorithm[FedProtoParams]):
    name = "fedproto"
    title = "FedProto"
    dp_refusal = (
        "its upload holds integer class counts and per-class prototypes, not an update of a "
        "global state that clipping bounds (the counts would leak label frequencies)"
    )
    search = {"fedproto_weight": Search(0.01, 10.0, log=True)}
    Params = FedProtoParams
    evaluation_is_local = True

    def broadcast(self, server_state: Payload, client: Client) -> Payload:
        """The global prototypes and which classes have one; {} before any exist."""
        if not server_state:
            return {}
        return {"prototypes": server_state["values"], "mask": server_state["counts"] > 0}

    def upload_reference(self, server_state: Payload) -> Payload:
        """C × 500 class mean representations with C counts."""
        return aggregation.class_table(self.env.num_classes, REPRESENTATION_DIM, "values")

    def receive(self, client: Client, payload: Payload) -> None:
        if payload:
            client.state["prototypes"] = payload["prototypes"].to(self.env.device)
            client.state["mask"] = payload["mask"].to(self.env.device)

    def local_update(self, client: Client, generator: torch.Generator) -> PhaseStats:
        model = client.state["model"]
        trained = self.phase(
            client,
            [model],
            self.model_loss(client),
            generator,
            self.config.train.model_epochs,
            self.model_sgd(),
            "model",
        )
        return trained.plus_flops(self.compute_local_prototypes(client))

    def model_loss(self, client: Client) -> LossFn:
        """CE(head(z), y) + λ·MSE(z, P[y]); plain CE while the client holds no prototypes."""
        model, weight = client.state["model"], self.params.weight
        prototypes, mask = client.state.get("prototypes"), client.state.get("mask")

        def loss(x: Tensor, y: Tensor) -> Tensor:
            z = model.features(x)  # B, 500
            ce = F.cross_entropy(model.head(z), y)
            if prototypes is None or mask is None or weight == 0.0:  # they arrive together
                return ce
            return ce + weight * prototype_penalty(z, y, prototypes, mask)

        return loss

    def compute_local_prototypes(self, client: Client) -> int:
        """Per-class mean representations over the training data, kept for upload; their FLOPs."""
        model = client.state["model"]
        values, counts, flops = self.class_statistics(client, model.features, "prototypes")
        client.state["upload"] = {"values": values, "counts": counts}
        return flops

    def upload(self, client: Client) -> Payload:
        return client.state.pop("upload")

    def aggregate(
        self, server_state: Payload, uploads: Mapping[int, Payload], weights: Mapping[int, float]
    ) -> dict[str, Tensor]:
        """Per-class average weighted by class counts (client sample weights are not used), or
        the configured rule's class-wise variant (norm_bounded: distances from the prototypes)."""
        if not uploads:
            return dict(server_state)
        return aggregation.aggregate_classwise_by(self.rule(), uploads, center=server_state.get("values"))

    def predict(self, client: Client, x: Tensor) -> Tensor:
        model: ZooModel = client.state["model"]
        mask = client.state.get("mask")
        if self.params.predict == "head" or mask is None or not mask.any():
            return model(x)
        return prototype_scores(model.features(x), client.state["prototypes"], mask)  # B, C
