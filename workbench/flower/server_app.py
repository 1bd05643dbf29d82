"""The ServerApp: find the client behind every SuperNode, run the rounds, write the run directory.

The run directory is the workbench's own (`results.write_run`: config.json, results.csv,
summary.json), so notebooks and reports read a Flower run unchanged; `flower.json` beside it
lists what crossed the wire per message and every refused upload.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, cast

from flwr.app import ConfigRecord, Context, Message, MessageType, RecordDict
from flwr.serverapp import Grid, ServerApp

from workbench.config import ConfigError, ExperimentConfig
from workbench.core import files
from workbench.core.results import to_frame
from workbench.core.run_files import write_run
from workbench.flower.messages import CONFIG, INFO, PARTITION_ID
from workbench.flower.settings import FlowerSettings, split_run_config
from workbench.flower.strategy import WorkbenchStrategy
from workbench.loop import privacy
from workbench.loop.server_round import RoundRefusedError

log = logging.getLogger("flwr")
FLOWER_FILE = "flower.json"


def _wait_for_nodes(grid: Grid, wanted: int, seconds: float) -> list[int]:
    """The connected node ids once at least `wanted` are connected; an error after `seconds`."""
    deadline = time.monotonic() + seconds
    while len(node_ids := sorted(grid.get_node_ids())) < wanted:
        if time.monotonic() > deadline:
            raise RuntimeError(
                f"only {len(node_ids)} of num_clients={wanted} SuperNodes connected within "
                f"{seconds:g} s; start one SuperNode per client with --node-config "
                f"'partition-id=K num-partitions={wanted}' (K = 0..{wanted - 1})"
            )
        time.sleep(0.1)
    return node_ids


def discover(
    grid: Grid, config: ExperimentConfig, settings: FlowerSettings
) -> tuple[dict[int, int], dict[int, dict[str, Any]]]:
    """(client id → node id, client id → its info), every client served by exactly one node."""
    wanted = config.federation.num_clients
    node_ids = _wait_for_nodes(grid, wanted, settings.wait_nodes)
    messages = [
        Message(RecordDict({CONFIG: ConfigRecord({})}), dst_node_id=node, message_type=MessageType.QUERY)
        for node in node_ids
    ]
    nodes: dict[int, int] = {}
    info: dict[int, dict[str, Any]] = {}
    for reply in grid.send_and_receive(messages, timeout=settings.timeout):
        node = reply.metadata.src_node_id
        if reply.has_error():
            raise RuntimeError(f"SuperNode {node} cannot serve this run: {reply.error.reason}")
        found = dict(reply.content.config_records[INFO])
        cid = int(cast(int, found[PARTITION_ID]))
        if cid in nodes:
            raise RuntimeError(
                f"SuperNodes {nodes[cid]} and {node} both have partition-id={cid}; "
                f"give every SuperNode its own partition-id"
            )
        nodes[cid], info[cid] = node, found
    missing = sorted(set(range(wanted)) - set(nodes))
    if missing:
        raise RuntimeError(f"no SuperNode answered for partition-id(s) {missing} of num_clients={wanted}")
    return nodes, info


def finish(
    strategy: WorkbenchStrategy, settings: FlowerSettings, stopped: str | None = None
) -> dict[str, Any]:
    """Write the run directory and flower.json; return the summary."""
    run_dir = Path(settings.out_dir).expanduser()
    summary = write_run(
        run_dir,
        strategy.config.to_flat(),
        privacy.with_epsilon(to_frame(strategy.rows), strategy.config),
        strategy.events,
        stopped,
    )
    details = {
        "transport": "flower",
        "nodes": {str(c): n for c, n in strategy.nodes.items()},
        "clients": {str(c): i for c, i in strategy.info.items()},
        "refused": strategy.refusals,
        "messages": strategy.traffic,
        "round_seconds": strategy.round_seconds,
    }
    files.write_json(run_dir / FLOWER_FILE, details, indent=1)
    log.info("workbench run directory written: %s", run_dir)
    return summary


def _checked(run_config: Mapping[str, Any]) -> tuple[ExperimentConfig, FlowerSettings]:
    """The run's config, refused before any node is contacted when it cannot run or be saved."""
    config, settings = split_run_config(run_config)
    if not Path(settings.out_dir).expanduser().is_absolute():
        # the ServerApp runs wherever the SuperLink starts it: a relative path would be a guess
        raise ConfigError(
            f"run config out-dir={settings.out_dir!r}: give an absolute path, e.g. "
            f"--run-config \"out-dir='/path/to/runs/flower-1'\""
        )
    privacy.check_available(config)
    return config, settings


def run_server(grid: Grid, run_config: Mapping[str, Any]) -> dict[str, Any]:
    """Everything a ServerApp does for one run; returns the summary of the run directory."""
    config, settings = _checked(run_config)
    nodes, info = discover(grid, config, settings)
    strategy = WorkbenchStrategy(config, nodes, info)
    try:
        strategy.start(
            grid,
            initial_arrays=strategy.initial_arrays(),
            num_rounds=config.federation.rounds,
            timeout=settings.timeout,
        )
    except RoundRefusedError as error:  # as in-process: stop, keeping every completed round
        log.error("run stopped at %s", error)
        return finish(strategy, settings, stopped=str(error))
    return finish(strategy, settings)


def make_server_app(run_config: Mapping[str, Any] | None = None) -> ServerApp:
    """A ServerApp; run_config overrides the Context's (Python-API simulations carry none)."""
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        run_server(grid, run_config if run_config is not None else context.run_config)

    return app


app = make_server_app()
