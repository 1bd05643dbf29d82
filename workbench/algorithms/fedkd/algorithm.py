"""FedKD: adaptive mutual distillation with a shared student and SVD-compressed updates.

Wu et al., "Communication-efficient federated learning via knowledge distillation", Nature
Communications 13, 2032 (2022), arXiv:2108.13323. Each client trains its private teacher (its
zoo model, evaluated) and a copy of the shared student (`fedkd_student_model`) on the same
batches: CE each, plus adaptive mutual distillation KL/(L_t + L_s) and an adaptive hidden loss
w·MSE(h_t, h_s)/(L_t + L_s) on the 500-d representations (equal widths: no projection). Each
term's target side and the denominator are detached, so gradients of one model's loss never
reach the other. Only the student's update travels, energy-threshold SVD compressed
(workbench.algorithms.fedkd.compression; energy = share of Σσ², as in the paper and the authors' code) at
T(t) = T_start + (T_end − T_start)·t/R, t = 1..R as in the authors' code, so the last round
keeps T_end. The server averages the reconstructed updates by sample
count, compresses the mean at the same T(t) and moves the global student by exactly that
compressed update, so server and clients hold the same student. Downlink: the server keeps
the compressed global updates and sends each sampled client all it has not received yet,
merged exactly (factors stacked along the rank, dense where that is not smaller): a client in
sync gets the round's compressed update, a client that missed rounds lands exactly on the
current global student. When a new step is kept, steps that start at a version no client sits
at are folded into the step before, so the server keeps at most one step per distinct client
version. Every client starts from the same initial student (a shared
seed, like FedLoRA's θ⁰), so round 1 sends nothing and no first contact needs a dense model.
Reconstructed choices: KL is batch-mean without T² scaling; one SGD over both models with the
private model's settings; the reported loss is the sum of both; SVD cost is not training FLOPs.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from workbench.algorithms.base import (
    Algorithm,
    Client,
    Environment,
    Payload,
    derived_seed,
    load_shared,
    state_copy,
)
from workbench.algorithms.fedavg import FedAvg
from workbench.core.lazy import lazy
from workbench.core.params import ConfigError, Search, Section, param
from workbench.core.zoo import MODELS

if TYPE_CHECKING:
    from torch import Tensor

    from workbench.config import ExperimentConfig
    from workbench.core.training import LossFn, PhaseStats

if TYPE_CHECKING:
    import torch
    import torch.nn.functional as F

    from workbench.algorithms.fedkd import compression
    from workbench.core import accounting, aggregation
else:
    torch = lazy("torch")
    F = lazy("torch.nn.functional")
    accounting = lazy("workbench.core.accounting")
    aggregation = lazy("workbench.core.aggregation")
    compression = lazy("workbench.algorithms.fedkd.compression")


@dataclass(frozen=True)
class FedKDParams(Section):
    prefix = "fedkd_"
    student_model: str = param("cnn5", "architecture of the shared student", choices=tuple(MODELS))
    energy_start: float = param(
        0.95, "SVD energy schedule start; round t of R keeps start + (end - start)·t/R", gt=0, le=1
    )
    energy_end: float = param(0.98, "SVD energy kept in the last round R", gt=0, le=1)
    temperature: float = param(1.0, "distillation temperature", gt=0)
    hidden_weight: float = param(1.0, "weight of the hidden-state (representation) loss", ge=0)


def tempered_kl(learner: Tensor, target: Tensor, temperature: float) -> Tensor:
    """KL(softmax(target/T) ‖ softmax(learner/T)), batch mean; the target is detached."""
    return F.kl_div(
        F.log_softmax(learner / temperature, 1),
        F.softmax(target.detach() / temperature, 1),
        reduction="batchmean",
    )


def fedkd_losses(
    t_logits: Tensor,
    s_logits: Tensor,
    t_hidden: Tensor,
    s_hidden: Tensor,
    y: Tensor,
    temperature: float,
    hidden_weight: float,
) -> tuple[Tensor, Tensor]:
    """(teacher loss, student loss): CE + adaptive mutual distillation + adaptive hidden loss."""
    task_t, task_s = F.cross_entropy(t_logits, y), F.cross_entropy(s_logits, y)
    # small task losses: both predict well, so their knowledge is trusted more (a scale, no path)
    quality = (task_t + task_s).detach()

    def side(task: Tensor, logits: Tensor, other: Tensor, hidden: Tensor, other_hidden: Tensor) -> Tensor:
        """One side's loss: its task loss plus what it distils from the other, scaled."""
        distilled = tempered_kl(logits, other, temperature) + hidden_weight * F.mse_loss(
            hidden, other_hidden.detach()
        )
        return task + distilled / quality

    return side(task_t, t_logits, s_logits, t_hidden, s_hidden), side(
        task_s, s_logits, t_logits, s_hidden, t_hidden
    )


class FedKD(Algorithm[FedKDParams]):
    name = "fedkd"
    title = "FedKD"
    dp_refusal = (
        "its upload is an SVD-compressed update whose energy schedule changes what is sent; "
        "clipping and noise before the compression are not built"
    )
    search = {"fedkd_temperature": Search(0.5, 4.0), "fedkd_hidden_weight": Search(0.01, 10.0, log=True)}
    Params = FedKDParams
    evaluation_is_local = True
    seed_purposes = FedAvg.seed_purposes  # the initial student: FedAvg's θ⁰ purpose

    @classmethod
    def check(cls, config: ExperimentConfig) -> None:
        """The energy schedule runs from start to end, never down."""
        kd = cls.params_in(config)
        if kd.energy_end < kd.energy_start:
            raise ConfigError(
                f"parameter fedkd_energy_end={kd.energy_end} is out of range: must be "
                f">= fedkd_energy_start={kd.energy_start}"
            )

    def __init__(self, config: ExperimentConfig, env: Environment) -> None:
        super().__init__(config, env)
        self.round = 1  # the current round, set by begin_round (server and clients alike)
        self.version = 0  # how many compressed global steps the student has taken
        self.steps: list[tuple[int, dict[str, Tensor]]] = []  # (from version, merged step onward)
        self.synced: dict[int, int] = {}  # cid → version of the global student it last received

    @property
    def history(self) -> list[dict[str, Tensor]]:
        """The compressed global steps the server keeps, oldest first (folded where possible)."""
        return [step for _, step in self.steps]

    def student_seed(self) -> int:
        """Seed of the initial student (identical on server and clients)."""
        return derived_seed(self.config.run.seed, 0, self.seed_purposes["shared_model"])

    def setup_client(self, client: Client) -> None:
        super().setup_client(client)
        student = self.build(self.params.student_model, self.student_seed())
        client.state["student"], client.state["received"] = student, state_copy(student)

    def initial_server_state(self) -> dict[str, Tensor]:
        return state_copy(self.build(self.params.student_model, self.student_seed()))

    def begin_round(self, round_: int) -> None:
        self.round = round_

    def energy(self) -> float:
        """SVD energy threshold of the current round."""
        kd = self.params
        return compression.energy_schedule(
            self.round, self.config.federation.rounds, kd.energy_start, kd.energy_end
        )

    def broadcast(self, server_state: Payload, client: Client) -> Payload:
        """Every compressed global step the client has not received, merged exactly ({} if none)."""
        since = self.synced.get(client.cid, 0)
        missed = [step for start, step in self.steps if start >= since]
        self.synced[client.cid] = self.version
        return compression.merge_payloads(missed, {n: t.shape for n, t in server_state.items()})

    def fold(self, server_state: Payload) -> None:
        """Merge each step into the one before it unless some client's version starts it."""
        kept = {0, *self.synced.values()}
        shapes = {n: t.shape for n, t in server_state.items()}
        folded: list[tuple[int, dict[str, Tensor]]] = []
        for start, step in self.steps:
            if folded and start not in kept:
                folded[-1] = (folded[-1][0], compression.merge_payloads([folded[-1][1], step], shapes))
            else:
                folded.append((start, step))
        self.steps = folded

    def receive(self, client: Client, payload: Payload) -> None:
        """The student restarts from the last received global student plus the downloaded step."""
        received = client.state["received"]
        if payload:
            step = compression.decompress_state(payload, {n: t.shape for n, t in received.items()})
            received = {n: received[n] + step[n] for n in received}
        client.state["received"] = received
        load_shared(client.state["student"], received)

    def local_update(self, client: Client, generator: torch.Generator) -> PhaseStats:
        modules = [client.state["model"], client.state["student"]]
        return self.phase(
            client,
            modules,
            self.kd_loss(client),
            generator,
            self.config.train.model_epochs,
            self.model_sgd(),
            "distill",
        )

    def kd_loss(self, client: Client) -> LossFn:
        """Sum of teacher and student losses: the detached targets keep their gradients apart."""
        teacher, student, kd = client.state["model"], client.state["student"], self.params

        def loss(x: Tensor, y: Tensor) -> Tensor:
            h_t, h_s = teacher.features(x), student.features(x)  # B, 500 each
            first, second = fedkd_losses(
                teacher.head(h_t), student.head(h_s), h_t, h_s, y, kd.temperature, kd.hidden_weight
            )
            return first + second

        return loss

    def upload(self, client: Client) -> Payload:
        received = client.state["received"]
        student = state_copy(client.state["student"])
        update = {n: t.detach() - received[n] for n, t in student.items()}
        return compression.compress_state(update, self.energy())

    def poisoned(
        self,
        client: Client,
        upload: Payload,
        down: Payload,
        attack: Callable[[Payload, Payload | None], dict[str, Tensor]],
    ) -> Payload:
        """The attack acts on the dense update (an update already: no reference), which is then
        compressed like an honest one."""
        shapes = {n: t.shape for n, t in client.state["received"].items()}
        dense = compression.decompress_state(upload, shapes)
        return compression.compress_state(attack(dense, None), self.energy())

    def update_norm(self, client: Client, upload: Payload, down: Payload) -> float:
        """The norm of the dense update the compressed upload carries (what the server adds)."""
        shapes = {n: t.shape for n, t in client.state["received"].items()}
        return accounting.update_l2(compression.decompress_state(upload, shapes), {})

    def validate_upload(self, cid: int, upload: Payload, server_state: Payload) -> None:
        """A compressed upload is honest when it reconstructs to a finite update of the student."""
        reconstruct(cid, upload, {n: t.shape for n, t in server_state.items()}, server_state)

    def aggregate(
        self, server_state: Payload, uploads: Mapping[int, Payload], weights: Mapping[int, float]
    ) -> dict[str, Tensor]:
        """Global student += the compressed sample-weighted mean of the reconstructed updates."""
        if not uploads:
            return dict(server_state)
        shapes = {n: t.shape for n, t in server_state.items()}
        updates = {cid: reconstruct(cid, payload, shapes, server_state) for cid, payload in uploads.items()}
        mean = aggregation.aggregate_by(self.rule(), updates, weights, reference=server_state)
        down = compression.compress_state(mean, self.energy())
        step = compression.decompress_state(down, shapes)
        self.fold(server_state)
        self.steps.append((self.version, down))
        self.version += 1
        return {n: server_state[n] + step[n] for n in server_state}

    def state_dict(self) -> dict[str, Any]:
        return {
            "round": self.round,
            "version": self.version,
            "synced": dict(self.synced),
            "starts": [start for start, _ in self.steps],
            "steps": [s for _, s in self.steps],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.round, self.version = int(state["round"]), int(state["version"])
        self.steps = list(zip((int(s) for s in state["starts"]), state["steps"]))
        self.synced = {int(c): int(v) for c, v in state["synced"].items()}


def reconstruct(
    cid: int, payload: Payload, shapes: Mapping[str, Any], reference: Payload
) -> dict[str, Tensor]:
    """A client's dense update from its compressed upload; a malformed one is refused by client."""
    try:
        update = compression.decompress_state(payload, shapes)
    except (ValueError, RuntimeError, KeyError, TypeError) as error:
        tensor = getattr(error, "tensor", None)  # compression.TensorPayloadError names it
        raise aggregation.InvalidUpdateError(cid, tensor, f"cannot reconstruct: {error}") from None
    aggregation.validate_update(cid, update, reference)
    return update
