"""LG-FedAvg: private local feature extractors, one global head averaged across clients.

Liang et al., "Think Locally, Act Globally: Federated Learning with Local and Global
Representations", arXiv:2001.01523. Here the local part is each client's heterogeneous zoo
feature extractor (conv1..fc2, never sent) and the global part is the classifier head
500→C (`head.weight`, `head.bias`), the one layer the whole zoo shares. A sampled client loads
the global head, trains its whole model with CE and uploads its head; the server averages the
heads weighted by training samples. Reconstructed/simplified: the paper's optional warm-up
rounds of full-model FedAvg are not run (the architectures differ, so they cannot be), and
every client starts from the server's initial head.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, cast

from workbench.algorithms.base import Algorithm, Client, Payload, derived_seed

if TYPE_CHECKING:
    from torch import Tensor

    from workbench.core.models import ZooModel

HEAD = "head."


def head_state(model: ZooModel) -> dict[str, Tensor]:
    """The head's tensors under their model names (head.weight: C×500, head.bias: C)."""
    return {HEAD + name: t.detach().clone() for name, t in model.head.state_dict().items()}


def load_head(model: ZooModel, payload: Payload) -> None:
    """Copy a head payload into the model's head; refuse anything that is not exactly the head."""
    if not payload or any(not name.startswith(HEAD) for name in payload):
        raise ValueError(f"a head payload holds only {HEAD}* tensors, got {sorted(payload)}")
    model.head.load_state_dict({name[len(HEAD) :]: t for name, t in payload.items()}, strict=True)


class LGFedAvg(Algorithm[None]):
    name = "lg_fedavg"
    title = "LG-FedAvg"
    dp_refusal = ""  # the upload mirrors the global state: the update is upload − download
    evaluation_is_local = True
    seed_purposes = {"server_head": 5}  # the initial global head

    def setup_client(self, client: Client) -> None:
        """A private model whose head starts as the global head."""
        super().setup_client(client)
        load_head(client.state["model"], self.initial_server_state())

    def initial_server_state(self) -> dict[str, Tensor]:
        """The initial global head, from a model built under a server-side seed."""
        model = self.build(
            self.config.client_models()[0],
            derived_seed(self.config.run.seed, 0, self.seed_purposes["server_head"]),
        )
        return head_state(cast("ZooModel", model))

    def receive(self, client: Client, payload: Payload) -> None:
        load_head(client.state["model"], payload)

    def upload(self, client: Client) -> Payload:
        return head_state(client.state["model"])
