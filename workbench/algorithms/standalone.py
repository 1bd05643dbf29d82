"""Standalone: every client trains its private model on its own data and communicates nothing.

The lower reference of personalized federated learning (the "Standalone" baseline of Yi et al.,
"FedLoRA: Model-Heterogeneous Personalized Federated Learning with LoRA Tuning",
arXiv:2310.13283): client k trains its zoo model F_k with CE on its local training split each
round it is sampled, and is evaluated on its local test split. Nothing is reconstructed: the
base class's private-model CE training is the whole method; the hooks below only make explicit
that no byte crosses the wire in either direction.
"""

from __future__ import annotations

from workbench.algorithms.base import Algorithm, Client, Payload


class Standalone(Algorithm[None]):
    name = "standalone"
    title = "Standalone"
    evaluation_is_local = True

    # setup_client, local_update (CE on the private model) and predict come from Algorithm.

    def broadcast(self, server_state: Payload, client: Client) -> Payload:
        """Nothing: there is no server knowledge (0 bytes down)."""
        return {}

    def upload(self, client: Client) -> Payload:
        """Nothing: the model never leaves the client (0 bytes up)."""
        return {}
