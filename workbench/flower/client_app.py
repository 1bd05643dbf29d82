"""The ClientApp: one SuperNode serves one workbench client through the algorithm's own hooks.

Per train message the node does exactly what `workbench.loop.rounds.run_round` does for a
sampled client: receive the broadcast, train with the generator derived from
(seed, round, client), upload, and keep its state on its own disk. Per evaluate message it
evaluates like `evaluate_all`. In an evaluation round a sampled client evaluates right after
its upload and sends the metrics with it: its state is then exactly what `evaluate_all` sees
after the round (aggregation never touches a client), and a round trip is saved. A query
message returns who the node is, so the server can map client ids to Flower node ids.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, cast

import torch
from flwr.app import ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from workbench.config import ExperimentConfig
from workbench.core.facts import Payload
from workbench.flower.messages import (
    ACCURACY,
    ARRAYS,
    CONFIG,
    DIAGNOSTIC,
    EVALUATE,
    EVALUATION,
    INFO,
    LOSS,
    METRICS,
    MODEL,
    NUM_EXAMPLES,
    NUM_TEST,
    NUM_TRAIN,
    NUM_VAL,
    PARTITION_ID,
    ROLLED_BACK,
    ROUND,
    STEPS,
    TORCH_THREADS,
    TRAIN_FLOPS,
    TRAIN_LOSS,
    UPDATE_NORM,
    VAL_ACCURACY,
    VAL_LOSS,
)
from workbench.flower.node import NodeClient, client_data, open_client, save_client, state_root
from workbench.flower.records import from_record, to_record
from workbench.flower.settings import partition_id, split_run_config
from workbench.loop.attacks import is_malicious, poison_upload
from workbench.loop.rounds import client_round, evaluate_client


def _node(
    message: Message, context: Context, run_config: Mapping[str, Any] | None, state_dir: str | None
) -> tuple[ExperimentConfig, NodeClient]:
    """The run's config and this node's client with its persisted state."""
    config, _ = split_run_config(run_config if run_config is not None else context.run_config)
    cid = partition_id(context.node_config, config.federation.num_clients)
    configured = cast("str | None", context.node_config.get("state-dir"))
    root = state_root(state_dir or configured, message.metadata.run_id)
    return config, open_client(config, cid, root)


Tamper = Callable[[int, Payload], Payload]  # (client id, upload) → upload


def _train(message: Message, config: ExperimentConfig, node: NodeClient, tamper: Tamper | None) -> RecordDict:
    """Receive, train, upload, persist: one participation in a round."""
    algorithm, client = node.algorithm, node.client
    round_ = int(cast(int, message.content.config_records[CONFIG][ROUND]))
    algorithm.begin_round(round_)
    down = from_record(message.content.array_records[ARRAYS], algorithm.env.device)
    stats, upload, rolled_back = client_round(algorithm, client, down, round_)
    if is_malicious(config, client.cid):
        upload = poison_upload(algorithm, client, upload, down, round_)
    norm = algorithm.update_norm(client, upload, down)  # of what it sends, as in-process
    save_client(node)  # after upload: some algorithms move the payload out of the client state
    if tamper is not None:
        upload = tamper(client.cid, upload)
    metrics = MetricRecord(
        {
            TRAIN_FLOPS: int(stats.flops),
            TRAIN_LOSS: float(stats.mean_loss),
            NUM_EXAMPLES: client.data.num_train,
            ROLLED_BACK: int(rolled_back),
            UPDATE_NORM: float(norm),
            **{f"{STEPS}{phase}": int(count) for phase, count in stats.phase_steps.items()},
        }
    )
    content = RecordDict({ARRAYS: to_record(upload), METRICS: metrics})
    if message.content.config_records[CONFIG].get(EVALUATE, False):
        content[EVALUATION] = _evaluate(node)
    return content


def _evaluate(node: NodeClient) -> MetricRecord:
    """Accuracy and loss of the client's deployed model on its local test and validation
    splits, and the diagnostics its method measured in the test pass."""
    client = node.client
    result = evaluate_client(node.algorithm, client)
    return MetricRecord(
        {
            ACCURACY: float(result.accuracy),
            LOSS: float(result.loss),
            VAL_ACCURACY: float(result.val_accuracy),
            VAL_LOSS: float(result.val_loss),
            NUM_TRAIN: client.data.num_train,
            NUM_TEST: client.data.num_test,
            NUM_VAL: client.data.num_val,
            **{f"{DIAGNOSTIC}{name}": float(value) for name, value in result.diagnostics.items()},
        }
    )


def _identify(context: Context, run_config: Mapping[str, Any] | None) -> RecordDict:
    """Which client this node serves, its model and split sizes (loading its data once)."""
    config, _ = split_run_config(run_config if run_config is not None else context.run_config)
    cid = partition_id(context.node_config, config.federation.num_clients)
    model, data, _ = client_data(config, cid)
    return RecordDict(
        {
            INFO: ConfigRecord(
                {
                    PARTITION_ID: cid,
                    MODEL: model,
                    NUM_TRAIN: data.num_train,
                    NUM_TEST: data.num_test,
                    TORCH_THREADS: torch.get_num_threads(),
                }
            )
        }
    )


def make_client_app(
    run_config: Mapping[str, Any] | None = None,
    state_dir: str | None = None,
    tamper: Tamper | None = None,
) -> ClientApp:
    """A ClientApp; run_config overrides the Context's (Python-API simulations carry none),
    state_dir the node's storage; tamper(cid, upload) replaces what a client sends after it
    trained (tests use it to send malformed uploads)."""
    app = ClientApp()

    @app.query()
    def query(message: Message, context: Context) -> Message:
        """Which client this node serves."""
        return Message(_identify(context, run_config), reply_to=message)

    @app.train()
    def train(message: Message, context: Context) -> Message:
        """One round's participation."""
        config, node = _node(message, context, run_config, state_dir)
        content = _train(message, config, node, tamper)
        return Message(content, reply_to=message)

    @app.evaluate()
    def evaluate_(message: Message, context: Context) -> Message:
        """Evaluation of a client that was not sampled this round."""
        _, node = _node(message, context, run_config, state_dir)
        return Message(RecordDict({EVALUATION: _evaluate(node)}), reply_to=message)

    return app


app = make_client_app()
