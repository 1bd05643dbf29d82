"""The Flower Strategy that drives a workbench algorithm: the server half of `run_round`.

Sampling (`sample_clients`), broadcast, aggregation and accounting (`Ledger`, `Row`) are the
in-process loop's own; Flower only carries the messages. Before aggregating, every upload is
checked by the algorithm's own `validate_upload` (against the round's global state);
a malformed or failed upload is refused with an error naming
the client and the tensor, and the round completes with the others.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import torch
from flwr.app import ArrayRecord, ConfigRecord, Message, MessageType, MetricRecord, RecordDict
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Strategy
from torch import Tensor

from workbench.algorithms import REGISTRY, Client, Environment
from workbench.config import ExperimentConfig
from workbench.core.accounting import Ledger
from workbench.core.aggregation import InvalidUpdateError
from workbench.core.results import NO_VALIDATION, Event, Row
from workbench.flower.messages import (
    ACCURACY,
    ARRAYS,
    CONFIG,
    DIAGNOSTIC,
    EVALUATE,
    EVALUATION,
    LOSS,
    METRICS,
    NUM_TEST,
    NUM_TRAIN,
    NUM_VAL,
    ROLLED_BACK,
    ROUND,
    STEPS,
    TRAIN_FLOPS,
    TRAIN_LOSS,
    UPDATE_NORM,
    VAL_ACCURACY,
    VAL_LOSS,
)
from workbench.flower.records import decode_update, from_record, record_bytes, to_record
from workbench.loop import privacy
from workbench.loop.devices import devices_for, dropouts, dropped_event
from workbench.loop.rounds import (
    RoundRefusedError,
    close_timed_round,
    evaluates,
    only_absent,
    refusal,
    sample_clients,
)

log = logging.getLogger("flwr")


def server_environment(config: ExperimentConfig) -> Environment:
    """The server's Environment: CPU, no data (the normalizer is never used on the server)."""
    return Environment.without_data(config.num_classes, torch.device("cpu"))


class WorkbenchStrategy(Strategy):
    """Rounds of one workbench algorithm over SuperNodes that serve clients 0..N−1."""

    def __init__(
        self, config: ExperimentConfig, nodes: Mapping[int, int], info: Mapping[int, Mapping[str, Any]]
    ) -> None:
        """nodes: client id → Flower node id; info: client id → what its node reported."""
        self.config, self.nodes, self.info = config, dict(nodes), dict(info)
        self.cid_of = {node: cid for cid, node in self.nodes.items()}
        self.algorithm = REGISTRY[config.run.algorithm](config, server_environment(config))
        # server-side stand-ins: hooks run here (broadcast) read the client's id, never its data
        self.handles = {
            cid: Client(cid=cid, model_name=name, data=None)  # type: ignore[arg-type]
            for cid, name in enumerate(config.client_models())
        }
        self.devices = devices_for(config.devices, config.run.seed, config.federation.num_clients)
        self.ledger, self.rows = Ledger(timed=self.devices is not None), []
        self.seconds: dict[int, float] = {}  # client → its simulated seconds this round
        self.refusals: list[dict[str, Any]] = []
        self.events: list[Event] = []  # the refusals as the run directory's events
        self.rolled_back: set[int] = set()  # clients whose reply says they rolled back this round
        self.traffic: list[dict[str, Any]] = []
        self.state: dict[str, Tensor] = {}
        self.down: dict[int, int] = {}  # client → tensor bytes sent to it this round
        self.evaluated: dict[int, MetricRecord] = {}  # evaluations that came with an upload
        # each client's last evaluation while it stays valid (until the client trains again),
        # reused like the in-process loop does instead of asking its node again
        self.latest: dict[int, MetricRecord] = {}
        self.round_seconds: list[float] = []  # wall time of each round, training to evaluation
        self._round_started = 0.0

    def initial_arrays(self) -> ArrayRecord:
        """θ⁰ (the algorithm's initial server state) as Flower arrays."""
        return to_record(self.algorithm.initial_server_state())

    def summary(self) -> None:
        """Log what runs."""
        cfg = self.config
        log.info(
            "workbench %s: %d clients, fraction %s, %d rounds, eval every %d",
            cfg.run.algorithm,
            cfg.federation.num_clients,
            cfg.federation.fraction,
            cfg.federation.rounds,
            cfg.federation.eval_every,
        )

    # ---- training ------------------------------------------------------------------------
    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """One message per sampled client with its broadcast payload."""
        self._round_started = time.perf_counter()
        fed = self.config.federation
        self.state = from_record(arrays)
        self.algorithm.begin_round(server_round)
        sampled = sample_clients(fed.num_clients, fed.fraction, self.config.run.seed, server_round)
        absent = dropouts(self.devices, self.config.run.seed, server_round, sampled)
        for cid in absent:  # as run_round: they are sent nothing
            self.events.append(dropped_event(server_round, cid, self.config.devices.dropout))
            self.ledger.miss(cid)
        sampled = [cid for cid in sampled if cid not in absent]
        settings = ConfigRecord({ROUND: server_round, EVALUATE: self._evaluates(server_round)})
        messages = []
        for cid in sampled:
            self.latest.pop(cid, None)  # it trains: its last evaluation goes stale
            record = to_record(self.algorithm.broadcast(self.state, self.handles[cid]))
            self.down[cid] = self._count(server_round, cid, "down", record)
            content = RecordDict({ARRAYS: record, CONFIG: settings})
            messages.append(
                Message(
                    content,
                    dst_node_id=self.nodes[cid],
                    message_type=MessageType.TRAIN,
                    group_id=str(server_round),
                )
            )
        return messages

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Account every reply, refuse the malformed ones, aggregate the rest."""
        answered = self._by_client(replies)
        self.evaluated.update(
            {
                cid: r.content.metric_records[EVALUATION]
                for cid, r in answered.items()
                if r.has_content() and EVALUATION in r.content.metric_records
            }
        )
        uploads, weights = {}, {}
        for cid in sorted(self.down):  # sorted: the in-process loop sums clients in this order
            try:
                uploads[cid] = self._accept(server_round, cid, answered.get(cid))
                weights[cid] = float(self.info[cid][NUM_TRAIN])
            except InvalidUpdateError as error:
                self._refuse(server_round, error)
        if self.devices is not None:
            uploads, weights = close_timed_round(
                self.devices, server_round, self.ledger, self.events, uploads, weights, self.seconds
            )
            self.seconds = {}
        if not uploads:
            if only_absent(self._round_events(server_round)):
                self.down, self.rolled_back = {}, set()  # as run_round: the state stays
                return to_record(self.state), MetricRecord({"accepted": 0, "refused": 0})
            raise RoundRefusedError(server_round, self._round_events(server_round))
        new_state, refused = privacy.aggregate(self.algorithm, self.state, uploads, weights, server_round)
        for error in refused:
            self._refuse(server_round, error)
        if len(refused) == len(uploads):
            raise RoundRefusedError(server_round, self._round_events(server_round))
        accepted = len(uploads) - len(refused)
        metrics = MetricRecord({"accepted": accepted, "refused": len(self.down) - accepted})
        self.down, self.rolled_back = {}, set()
        return to_record(new_state), metrics

    def _accept(self, round_: int, cid: int, reply: Message | None) -> dict[str, Tensor]:
        """Record one client's costs and return its validated upload (or refuse it)."""
        if reply is None:
            self.ledger.add(cid, 0, 0, self.down[cid], math.nan)
            raise InvalidUpdateError(cid, None, "no reply before the round's timeout")
        if reply.has_error():
            self.ledger.add(cid, 0, 0, self.down[cid], math.nan)
            raise InvalidUpdateError(cid, None, f"the ClientApp failed: {reply.error.reason}")
        record = reply.content.array_records.get(ARRAYS)
        metrics = reply.content.metric_records.get(METRICS, MetricRecord())
        try:
            up = self._count(round_, cid, "up", record) if record is not None else 0
        except (TypeError, ValueError):  # arrays of no known dtype: decode_update refuses them
            up = 0
        self.ledger.add(
            cid,
            int(metrics.get(TRAIN_FLOPS, 0)),
            up,
            self.down[cid],
            float(metrics.get(TRAIN_LOSS, math.nan)),
            {k.removeprefix(STEPS): int(v) for k, v in metrics.items() if k.startswith(STEPS)},
            float(metrics.get(UPDATE_NORM, math.nan)),
        )
        if self.devices is not None:
            flops = int(metrics.get(TRAIN_FLOPS, 0))
            self.seconds[cid] = self.devices.seconds(cid, flops, up, self.down[cid])
        if metrics.get(ROLLED_BACK, 0):
            self.rolled_back.add(cid)
        update = decode_update(cid, record)
        self.algorithm.validate_upload(cid, update, self.state)
        return update

    def _refuse(self, round_: int, error: InvalidUpdateError) -> None:
        """Log and record a refused upload; the round goes on without it."""
        log.error("round %d: %s", round_, error)
        self.refusals.append(
            {"round": round_, "client": error.client, "tensor": error.tensor, "error": str(error)}
        )
        self.events.append(refusal(round_, error, error.client in self.rolled_back))
        self.ledger.refuse(error.client)

    def _round_events(self, round_: int) -> list[Event]:
        """This round's refusals."""
        return [e for e in self.events if e.round == round_]

    # ---- evaluation ----------------------------------------------------------------------
    def configure_evaluate(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """In the in-process loop's evaluation rounds: every client neither evaluated on upload
        nor holding a still valid evaluation."""
        if not self._evaluates(server_round):
            return []
        content = RecordDict({CONFIG: ConfigRecord({ROUND: server_round})})
        known = self.evaluated.keys() | self.latest.keys()
        return [
            Message(
                content,
                dst_node_id=self.nodes[cid],
                message_type=MessageType.EVALUATE,
                group_id=str(server_round),
            )
            for cid in sorted(self.nodes)
            if cid not in known
        ]

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]) -> MetricRecord | None:
        """One row per client, its costs settled since its last row, as `evaluate_all` does."""
        self.round_seconds.append(round(time.perf_counter() - self._round_started, 3))
        if not self._evaluates(server_round):
            return None
        evaluated, self.evaluated = {**self.latest, **self.evaluated}, {}
        for cid, reply in self._by_client(replies).items():
            if reply.has_error():
                log.error(
                    "round %d: evaluation of client %d failed: %s", server_round, cid, reply.error.reason
                )
            else:
                evaluated[cid] = reply.content.metric_records[EVALUATION]
        missing = sorted(set(self.nodes) - set(evaluated))
        if missing:
            log.error(
                "round %d: no evaluation from clients %s; their rows are missing", server_round, missing
            )
        new_rows = []
        for cid in sorted(evaluated):
            try:
                new_rows.append(self._row(server_round, cid, evaluated[cid]))
            except (KeyError, TypeError, ValueError) as error:
                log.error("round %d: unreadable evaluation from client %d: %r", server_round, cid, error)
        self.rows.extend(new_rows)
        if self.algorithm.evaluation_is_local:
            self.latest = {r.client: evaluated[r.client] for r in new_rows}
        if not new_rows:
            return None
        accuracy = float(np.mean([r.accuracy for r in new_rows]))
        log.info("round %d: mean accuracy %.4f", server_round, accuracy)
        return MetricRecord({ACCURACY: accuracy})

    def _row(self, round_: int, cid: int, metrics: MetricRecord) -> Row:
        """A client's table row from its evaluation metrics and its settled costs."""
        accuracy, loss = float(metrics[ACCURACY]), float(metrics[LOSS])
        num_train, num_test = int(metrics[NUM_TRAIN]), int(metrics[NUM_TEST])
        diagnostics = {
            k.removeprefix(DIAGNOSTIC): float(v) for k, v in metrics.items() if k.startswith(DIAGNOSTIC)
        }
        # settled only once the metrics were readable: unsettled costs go into the next row
        return self.ledger.row(
            round_,
            cid,
            self.handles[cid].model_name,
            self.algorithm.name,
            accuracy,
            loss,
            num_train,
            num_test,
            diagnostics,
            val_accuracy=float(metrics.get(VAL_ACCURACY, NO_VALIDATION)),
            val_loss=float(metrics.get(VAL_LOSS, NO_VALIDATION)),
            num_val=int(metrics.get(NUM_VAL, 0)),
        )

    # ---- helpers -------------------------------------------------------------------------
    def _evaluates(self, round_: int) -> bool:
        """Whether the in-process loop evaluates after this round."""
        return evaluates(self.config, round_)

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
        self.traffic.append(
            {
                "round": round_,
                "client": cid,
                "direction": direction,
                "keys": sorted(record),
                "tensor_bytes": tensor,
                "serialized_bytes": serialized,
            }
        )
        return tensor
