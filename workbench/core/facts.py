"""Facts used across the package, each defined once: datasets, partitions, devices, file names
and the purposes that seeds are derived for."""

from __future__ import annotations

from collections.abc import Mapping
from enum import IntEnum

Payload = Mapping[str, "torch.Tensor"]  # what crosses the wire: tensors by name

DATASET_CLASSES = {"digits": 10, "cifar10": 10, "cifar100": 100}
PARTITIONS = ("pathological", "dirichlet")
DEVICES = ("auto", "cpu", "cuda")

# files of a run directory and of a sweep folder
CONFIG_FILE, TABLE_FILE, SUMMARY_FILE = "config.json", "results.csv", "summary.json"
CHECKPOINT_FILE = "checkpoint.pt"
SWEEP_FILE, STATUS_FILE, REPORT_FILE = "sweep.json", "status.json", "report.html"


class Seed(IntEnum):
    """What a derived seed is for: `derived_seed(run seed, round or client, …, Seed.X)`."""

    CLIENT_MODEL = 1  # a client's private model (with the client id)
    ADAPTER = 2  # FedLoRA's θ⁰, identical on server and clients
    BATCHES = 3  # a client's batch order in a round (with round and client id)
    SHARED_MODEL = 4  # the shared model of FedAvg, FML and FedKD (identical everywhere)
    SERVER_HEAD = 5  # LG-FedAvg's initial global head
    SAMPLING = 7  # which clients a round samples (with the round)
