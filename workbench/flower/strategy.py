"""The Flower Strategy that drives a workbench algorithm: the server half of `run_round`.

Sampling (`sample_clients`), broadcast, aggregation and accounting (`Ledger`, `Row`) are the
in-process loop's own; Flower only carries the messages. Before aggregating, every upload is
checked against the round's reference payload (`payloads.upload_reference`) with
`aggregation.validate_update`; a malformed or failed upload is refused with an error naming
the client and the tensor, and the round completes with the others.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import torch
from flwr.app import ArrayRecord, ConfigRecord, Message, MessageType, MetricRecord, RecordDict
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Strategy
from torch import Tensor

from workbench.aggregation import InvalidUpdateError, validate_update
from workbench.algorithms import REGISTRY, Client, Environment
from workbench.config import ExperimentConfig
from workbench.data import Normalizer
from workbench.flower.client_app import ROUND
from workbench.flower.payloads import upload_reference
from workbench.flower.records import decode_update, from_record, record_bytes, to_record
from workbench.results import Row
from workbench.simulation import Ledger, sample_clients

log = logging.getLogger("flwr")


def server_environment(config: ExperimentConfig) -> Environment:
    """The server's Environment: CPU, no data (the normalizer is never used on the server)."""
    return Environment(num_classes=config.num_classes, device=torch.device("cpu"),
                       normalize=Normalizer((0.0,) * 3, (1.0,) * 3), flip=False)


class WorkbenchStrategy(Strategy):
    """Rounds of one workbench algorithm over SuperNodes that serve clients 0..N−1."""

    def __init__(self, config: ExperimentConfig, nodes: Mapping[int, int],
                 info: Mapping[int, Mapping[str, Any]]) -> None:
        self.config, self.nodes, self.info = config, dict(nodes), dict(info)
        self.cid_of = {node: cid for cid, node in self.nodes.items()}
        self.algorithm = REGISTRY[config.run.algorithm](config, server_environment(config))
        # server-side stand-ins: hooks run here (broadcast) read the client's id, never its data
        self.handles = {cid: Client(cid=cid, model_name=name, data=None)  # type: ignore[arg-type]
                        for cid, name in enumerate(config.client_models())}
        self.ledger, self.rows = Ledger(), []
        self.refusals: list[dict[str, Any]] = []
        self.traffic: list[dict[str, Any]] = []
        self.state: dict[str, Tensor] = {}
        self.down: dict[int, int] = {}

    def initial_arrays(self) -> ArrayRecord:
        """θ⁰ (the algorithm's initial server state) as Flower arrays."""
        return to_record(self.algorithm.initial_server_state())

    def summary(self) -> None:
        """Log what runs."""
        cfg = self.config
        log.info("workbench %s: %d clients, fraction %s, %d rounds, eval every %d",
                 cfg.run.algorithm, cfg.federation.num_clients, cfg.federation.fraction,
                 cfg.federation.rounds, cfg.federation.eval_every)

    # ---- training ------------------------------------------------------------------------
    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                        grid: Grid) -> Iterable[Message]:
        """One message per sampled client with its broadcast payload."""
        fed = self.config.federation
        self.state = from_record(arrays)
        sampled = sample_clients(fed.num_clients, fed.fraction, self.config.run.seed, server_round)
        messages = []
        for cid in sampled:
            record = to_record(self.algorithm.broadcast(self.state, self.handles[cid]))
            self.down[cid] = self._count(server_round, cid, "down", record)
            content = RecordDict({"arrays": record, "config": ConfigRecord({ROUND: server_round})})
            messages.append(Message(content, dst_node_id=self.nodes[cid],
                                    message_type=MessageType.TRAIN, group_id=str(server_round)))
        return messages

    def aggregate_train(self, server_round: int,
                        replies: Iterable[Message]) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Account every reply, refuse the malformed ones, aggregate the rest."""
        answered = self._by_client(replies)
        reference = upload_reference(self.config, self.state)
        uploads, weights = {}, {}
        for cid in sorted(self.down):  # sorted: the in-process loop sums clients in this order
            try:
                uploads[cid] = self._accept(server_round, cid, answered.get(cid), reference)
                weights[cid] = float(self.info[cid]["num-train"])
            except InvalidUpdateError as error:
                self._refuse(server_round, error)
        new_state = self._aggregate(server_round, uploads, weights)
        metrics = MetricRecord({"accepted": len(uploads), "refused": len(self.down) - len(uploads)})
        self.down = {}
        return to_record(new_state), metrics

    def _accept(self, round_: int, cid: int, reply: Message | None,
                reference: Mapping[str, Tensor] | None) -> dict[str, Tensor]:
        """Record one client's costs and return its validated upload (or refuse it)."""
        if reply is None:
            self.ledger.add(cid, 0, 0, self.down[cid], math.nan)
            raise InvalidUpdateError(cid, None, "no reply before the round's timeout")
        if reply.has_error():
            self.ledger.add(cid, 0, 0, self.down[cid], math.nan)
            raise InvalidUpdateError(cid, None, f"the ClientApp failed: {reply.error.reason}")
        record = reply.content.array_records.get("arrays")
        metrics = reply.content.metric_records.get("metrics", MetricRecord())
        up = self._count(round_, cid, "up", record) if record is not None else 0
        self.ledger.add(cid, int(metrics.get("train-flops", 0)), up, self.down[cid],
                        float(metrics.get("train-loss", math.nan)))
        update = decode_update(cid, record)
        if reference is not None:
            validate_update(cid, update, reference)
        return update

    def _aggregate(self, round_: int, uploads: dict[int, dict[str, Tensor]],
                   weights: dict[int, float]) -> dict[str, Tensor]:
        """The algorithm's aggregate; a client its own checks refuse is dropped and it reruns."""
        while True:
            try:
                return self.algorithm.aggregate(self.state, uploads, weights)
            except InvalidUpdateError as error:
                if error.client not in uploads:
                    raise
                self._refuse(round_, error)
                del uploads[error.client], weights[error.client]

    def _refuse(self, round_: int, error: InvalidUpdateError) -> None:
        """Log a refused upload; the round goes on without it."""
        log.error("round %d: %s", round_, error)
        self.refusals.append({"round": round_, "client": error.client, "tensor": error.tensor,
                              "error": str(error)})

    # ---- evaluation ----------------------------------------------------------------------
    def configure_evaluate(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                           grid: Grid) -> Iterable[Message]:
        """Every client, on the rounds the in-process loop evaluates; nobody otherwise."""
        fed = self.config.federation
        if server_round % fed.eval_every and server_round != fed.rounds:
            return []
        content = RecordDict({"config": ConfigRecord({ROUND: server_round})})
        return [Message(content, dst_node_id=self.nodes[cid], message_type=MessageType.EVALUATE,
                        group_id=str(server_round)) for cid in sorted(self.nodes)]

    def aggregate_evaluate(self, server_round: int,
                           replies: Iterable[Message]) -> MetricRecord | None:
        """One row per client, its costs settled since its last row, as `evaluate_all` does."""
        answered = self._by_client(replies)
        new_rows = []
        for cid in sorted(self.nodes):
            reply = answered.get(cid)
            if reply is None or reply.has_error():
                reason = "no reply" if reply is None else reply.error.reason
                log.error("round %d: evaluation of client %d failed: %s", server_round, cid, reason)
                continue
            new_rows.append(self._row(server_round, cid, reply.content.metric_records["metrics"]))
        self.rows.extend(new_rows)
        if not new_rows:
            return None
        accuracy = float(np.mean([r.accuracy for r in new_rows]))
        log.info("round %d: mean accuracy %.4f", server_round, accuracy)
        return MetricRecord({"accuracy": accuracy})

    def _row(self, round_: int, cid: int, metrics: MetricRecord) -> Row:
        """A client's table row from its evaluation metrics and its settled costs."""
        took_part, train_loss, flops, up, down = self.ledger.settle(cid)
        return Row(round=round_, client=cid, model=self.handles[cid].model_name,
                   algorithm=self.algorithm.name, participated=took_part,
                   accuracy=float(metrics["accuracy"]), loss=float(metrics["loss"]),
                   train_loss=train_loss, train_flops=flops, bytes_up=up, bytes_down=down,
                   num_train=int(metrics["num-train"]), num_test=int(metrics["num-test"]))

    # ---- helpers -------------------------------------------------------------------------
    def _by_client(self, replies: Iterable[Message]) -> dict[int, Message]:
        """Replies keyed by the client id of the node that sent them."""
        answered = {}
        for reply in replies:
            cid = self.cid_of.get(reply.metadata.src_node_id)
            if cid is None:
                log.warning("ignoring a reply from unknown node %s", reply.metadata.src_node_id)
                continue
            answered[cid] = reply
        return answered

    def _count(self, round_: int, cid: int, direction: str, record: ArrayRecord) -> int:
        """Tensor bytes of a record as Flower carries it; logs the .npy framing beside them."""
        tensor, serialized = record_bytes(record)
        self.traffic.append({"round": round_, "client": cid, "direction": direction,
                             "keys": sorted(record), "tensor_bytes": tensor,
                             "serialized_bytes": serialized})
        return tensor
