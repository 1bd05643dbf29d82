"""FedAvg: the homogeneous reference, every client trains one shared architecture.

McMahan et al., "Communication-Efficient Learning of Deep Networks from Decentralized Data",
AISTATS 2017. All clients use `fedavg_model` (`FedAvg.client_models` assigns it to every client)
and start from the server's θ⁰. Each sampled client loads the global model exactly, trains it
with CE for `model_epochs` local epochs and uploads all of its parameters; the server sets
θ^{t+1} = Σ n_k θ_k / Σ n_k over the sampled clients (n_k: training samples). As for every
method here, a client is evaluated with the model it holds, i.e. the global model after its
own latest local update (a never-sampled client holds θ⁰).
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
from workbench.core.params import Section, param
from workbench.core.zoo import MODELS

if TYPE_CHECKING:
    from torch import Tensor

    from workbench.config import ExperimentConfig


@dataclass(frozen=True)
class FedAvgParams(Section):
    prefix = "fedavg_"
    model: str = param("cnn5", "the one architecture every FedAvg client uses", choices=tuple(MODELS))


class FedAvg(Algorithm[FedAvgParams]):
    name = "fedavg"
    title = "FedAvg"
    dp_refusal = ""  # the upload mirrors the global state: the update is upload − download
    Params = FedAvgParams
    evaluation_is_local = True
    # θ⁰ of the shared model, identical on server and clients; FML's and FedKD's shared models
    # use the same purpose, so the three start from the same draw
    seed_purposes = {"shared_model": 4}

    @classmethod
    def client_models(cls, config: ExperimentConfig) -> list[str]:
        """Every client trains the one architecture `fedavg_model`."""
        return [cls.params_in(config).model] * config.federation.num_clients

    def setup_client(self, client: Client) -> None:
        """The client's copy of θ⁰ (same seed as the server's)."""
        wanted = self.params.model
        if client.model_name != wanted:
            raise ValueError(
                f"FedAvg client {client.cid} has model {client.model_name!r}; every "
                f"client must use fedavg_model={wanted!r}"
            )
        client.state["model"] = self.build(wanted, self.global_seed())

    def global_seed(self) -> int:
        """Seed of θ⁰."""
        return derived_seed(self.config.run.seed, 0, self.seed_purposes["shared_model"])

    def initial_server_state(self) -> dict[str, Tensor]:
        """θ⁰: all parameters of one freshly built `fedavg_model`."""
        return state_copy(self.build(self.params.model, self.global_seed()))

    def receive(self, client: Client, payload: Payload) -> None:
        """Overwrite the client's model with the global one (strict: every tensor, exactly)."""
        load_shared(client.state["model"], payload)

    def upload(self, client: Client) -> Payload:
        return state_copy(client.state["model"])
