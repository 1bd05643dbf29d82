"""The Flower Strategy that drives a workbench algorithm: Flower carries `ServerRound`.

The server's side of a round is the in-process loop's own `workbench.loop.server_round.ServerRound`
(sampling, dropouts, broadcast, screening and refusing uploads, aggregation, the Ledger, the
events); this strategy only turns its broadcasts into messages and the replies back into
`TrainingRecord`s and uploads (an upload that cannot be decoded, a failed ClientApp or no reply
is refused, naming the client and the tensor, and the round completes with the others). Rows
are settled from each client's `EvaluationRecord` by the same `Ledger.row` as in-process.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterable, Mapping
from typing import Any, cast

import numpy as np
import torch
from flwr.app import ArrayRecord, ConfigRecord, Message, MessageType, MetricRecord, RecordDict
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Strategy
from torch import Tensor

from workbench.algorithms import REGISTRY, Client, Environment
from workbench.config import ExperimentConfig
from workbench.core.accounting import EvaluationRecord, Ledger, TrainingRecord
from workbench.core.aggregation import InvalidUpdateError
from workbench.core.results import NO_VALIDATION, Evaluation, Event, Row
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
from workbench.loop.devices import devices_for
from workbench.loop.rounds import evaluates
from workbench.loop.server_round import ServerRound

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
        self.ledger = Ledger(timed=self.devices is not None)
        self.rows: list[Row] = []
        self.refusals: list[dict[str, Any]] = []
        self.events: list[Event] = []  # the run directory's events (refusals, dropouts, late)
        self.traffic: list[dict[str, Any]] = []
        self.step: ServerRound | None = None  # the round between configure_train and aggregate_train
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
        """One message per participant of the round with its broadcast payload."""
        self._round_started = time.perf_counter()
        self.step = ServerRound(
            self.algorithm,
            from_record(arrays),
            server_round,
            self.config.federation.num_clients,
            self.ledger,
            self.events,
            self.devices,
            on_refusal=self._log_refusal,
        )
        settings = ConfigRecord({ROUND: server_round, EVALUATE: self._evaluates(server_round)})
        messages, self.down = [], {}
        for cid in self.step.participants:
            self.latest.pop(cid, None)  # it trains: its last evaluation goes stale
            record = to_record(self.step.broadcast(self.handles[cid]))
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
        """Hand every participant's reply to the round, which accepts or refuses it, and close it."""
        step = self.step
        assert step is not None, "Flower calls configure_train before aggregate_train"
        answered = self._by_client(replies)
        self.evaluated.update(
            {
                cid: r.content.metric_records[EVALUATION]
                for cid, r in answered.items()
                if r.has_content() and EVALUATION in r.content.metric_records
            }
        )
        for cid in step.participants:  # in id order: the in-process loop sums clients so
            self._take(step, cid, answered.get(cid))
        new_state = step.close()
        # a round that kept the state for want of uploads (dropouts, deadline) reports none refused
        refused = len(step.participants) - step.accepted if step.accepted else 0
        return to_record(new_state), MetricRecord({"accepted": step.accepted, "refused": refused})

    def _take(self, step: ServerRound, cid: int, reply: Message | None) -> None:
        """A participant's reply as the round takes it: its costs and its upload."""
        if reply is None:
            step.lost(cid, self.down[cid], "no reply before the round's timeout")
            return
        if reply.has_error():
            step.lost(cid, self.down[cid], f"the ClientApp failed: {reply.error.reason}")
            return
        record = reply.content.array_records.get(ARRAYS)
        metrics = reply.content.metric_records.get(METRICS, MetricRecord())
        try:
            up = self._count(step.round, cid, "up", record) if record is not None else 0
        except (TypeError, ValueError):  # arrays of no known dtype: decode_update refuses them
            up = 0
        training = TrainingRecord(
            flops=int(cast(int, metrics.get(TRAIN_FLOPS, 0))),
            up=up,
            down=self.down[cid],
            loss=float(cast(float, metrics.get(TRAIN_LOSS, math.nan))),
            steps={
                k.removeprefix(STEPS): int(cast(int, v)) for k, v in metrics.items() if k.startswith(STEPS)
            },
            update_norm=float(cast(float, metrics.get(UPDATE_NORM, math.nan))),
        )
        upload: dict[str, Tensor] | InvalidUpdateError
        try:
            upload = decode_update(cid, record)
        except InvalidUpdateError as error:
            upload = error
        weight = float(self.info[cid][NUM_TRAIN])
        step.take(cid, training, upload, weight, rolled_back=bool(metrics.get(ROLLED_BACK, 0)))

    def _log_refusal(self, round_: int, error: InvalidUpdateError) -> None:
        """Log a refused upload and list it for flower.json; the round goes on without it."""
        log.error("round %d: %s", round_, error)
        self.refusals.append(
            {"round": round_, "client": error.client, "tensor": error.tensor, "error": str(error)}
        )

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
        diagnostics = {
            k.removeprefix(DIAGNOSTIC): float(cast(float, v))
            for k, v in metrics.items()
            if k.startswith(DIAGNOSTIC)
        }
        evaluation = Evaluation(
            float(cast(float, metrics[ACCURACY])),
            float(cast(float, metrics[LOSS])),
            diagnostics,
            float(cast(float, metrics.get(VAL_ACCURACY, NO_VALIDATION))),
            float(cast(float, metrics.get(VAL_LOSS, NO_VALIDATION))),
        )
        record = EvaluationRecord(
            cid,
            self.handles[cid].model_name,
            self.algorithm.name,
            evaluation,
            int(cast(int, metrics[NUM_TRAIN])),
            int(cast(int, metrics[NUM_TEST])),
            int(cast(int, metrics.get(NUM_VAL, 0))),
        )
        # settled only once the metrics were readable: unsettled costs go into the next row
        return self.ledger.row(round_, record)

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
