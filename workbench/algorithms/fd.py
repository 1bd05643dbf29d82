"""FD (federated distillation): clients share per-class mean logits instead of weights.

Jeong et al., "Communication-Efficient On-Device Machine Learning: Federated Distillation and
Augmentation under Non-IID Private Data", arXiv:1811.11479 (FD only, no FAug).
Client k trains its private model on CE(f(x), y) + λ·T²·KL(softmax(g_k[y]/T) ‖ softmax(f(x)/T)),
the KL term only for samples whose class y has a teacher. After training, one forward pass over
its training data gives its per-class mean logits, uploaded with the per-class sample counts.
As in the paper's Algorithm 1, client k's teacher g_k[y] excludes its own contribution: the
server keeps the last round's uploads and sends each client the mean over the *other* clients,
with a mask of the classes that have a teacher. Reconstructed: the mean is weighted by class
counts (the paper's Algorithm 1 weighs devices equally); local logits come from that extra pass
after training (the paper accumulates them during training); T and the T² factor follow
Hinton et al.'s distillation (the paper has no temperature, i.e. T = 1).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from workbench.algorithms.base import Algorithm, Client, Payload
from workbench.core.lazy import lazy
from workbench.core.params import Search, Section, param

if TYPE_CHECKING:
    from torch import Tensor

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
class FDParams(Section):
    prefix = "fd_"
    weight: float = param(1.0, "lambda: weight of distillation toward global class logits", ge=0)
    temperature: float = param(1.0, "softmax temperature of the distillation term", gt=0)


def distillation_loss(logits: Tensor, y: Tensor, teacher: Tensor, mask: Tensor, temperature: float) -> Tensor:
    """T²·KL(softmax(g[y]/T) ‖ softmax(f/T)), averaged over the batch; 0 where y has no g."""
    log_student = F.log_softmax(logits / temperature, dim=1)  # B, C
    log_teacher = F.log_softmax(teacher[y] / temperature, dim=1)  # B, C
    kl = F.kl_div(log_student, log_teacher, reduction="none", log_target=True).sum(1)  # B
    return temperature**2 * (kl * mask[y]).mean()


class FederatedDistillation(Algorithm[FDParams]):
    name = "fd"
    title = "FD"
    dp_refusal = (
        "its upload holds integer class counts and per-class mean logits, not an update of a "
        "global state that clipping bounds (the counts would leak label frequencies)"
    )
    search = {"fd_weight": Search(0.01, 10.0, log=True), "fd_temperature": Search(0.5, 4.0)}
    Params = FDParams
    evaluation_is_local = True

    def setup_client(self, client: Client) -> None:
        super().setup_client(client)
        # fixed keys from the start, so a checkpointed client state always has the same shape
        client.state["teacher"], client.state["upload"] = {}, {}

    def aggregate(
        self, server_state: Payload, uploads: Mapping[int, Payload], weights: Mapping[int, float]
    ) -> dict[str, Tensor]:
        """Keep this round's validated uploads by client; teachers are formed per client."""
        if not uploads:
            return dict(server_state)
        aggregation.classwise_average(
            uploads, values="logits"
        )  # validates every upload (keys, shapes, counts)
        return {f"{cid}/{name}": t for cid, u in uploads.items() for name, t in u.items()}

    def upload_reference(self, server_state: Payload) -> Payload:
        """C × C class mean logits with C counts."""
        classes = self.env.num_classes
        return aggregation.class_table(classes, classes, "logits")

    def broadcast(self, server_state: Payload, client: Client) -> Payload:
        """Count-weighted class mean logits of the other clients, with a mask; {} if none."""
        others: dict[int, dict[str, Tensor]] = {}
        for key, t in server_state.items():
            cid, name = key.split("/")
            if int(cid) != client.cid:
                others.setdefault(int(cid), {})[name] = t
        if not others:
            return {}
        mean = aggregation.aggregate_classwise_by(self.rule(), others, values="logits")
        mask = mean["counts"] > 0  # C
        return {"logits": mean["logits"], "mask": mask} if mask.any() else {}

    def receive(self, client: Client, payload: Payload) -> None:
        client.state["teacher"] = {k: t.to(self.env.device) for k, t in payload.items()}

    def local_update(self, client: Client, generator: torch.Generator) -> PhaseStats:
        trained = self.phase(
            client,
            [client.state["model"]],
            self.model_loss(client),
            generator,
            self.config.train.model_epochs,
            self.model_sgd(),
            "model",
        )
        return trained.plus_flops(self.compute_class_logits(client))

    def model_loss(self, client: Client) -> LossFn:
        """CE + λ·T²·KL toward the teacher of each sample's class; plain CE without a teacher."""
        model, teacher, fd = client.state["model"], client.state["teacher"], self.params

        def loss(x: Tensor, y: Tensor) -> Tensor:
            logits = model(x)  # B, C
            ce = F.cross_entropy(logits, y)
            if not teacher or fd.weight == 0.0:
                return ce
            kd = distillation_loss(logits, y, teacher["logits"], teacher["mask"], fd.temperature)
            return ce + fd.weight * kd

        return loss

    def compute_class_logits(self, client: Client) -> int:
        """Class mean logits over the training data, kept for upload; returns the pass's FLOPs."""
        model = client.state["model"]
        logits, counts, flops = self.class_statistics(client, model, "fd-logits")
        client.state["upload"] = {"logits": logits, "counts": counts}
        return flops

    def upload(self, client: Client) -> Payload:
        payload, client.state["upload"] = client.state["upload"], {}
        return payload
