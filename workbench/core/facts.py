"""Facts used across the package, each defined once: datasets, partitions, devices, the default
reference methods of reports (parameters' defaults, by name), file names and the generic
purposes that seeds are derived for (a method declares its own)."""

from __future__ import annotations

from collections.abc import Mapping
from enum import IntEnum
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

Payload = Mapping[str, "torch.Tensor"]  # what crosses the wire: tensors by name

DATASET_CLASSES = {"digits": 10, "cifar10": 10, "cifar100": 100}
PARTITIONS = ("pathological", "dirichlet")
DEVICES = ("auto", "cpu", "cuda")
AGGREGATORS = ("mean", "norm_bounded", "median", "trimmed_mean")  # workbench.core.aggregation
ATTACKS = ("none", "scale", "sign_flip", "noise")  # workbench.loop.attacks
DEVICE_PROFILES = ("same", "lognormal", "tiers")  # workbench.loop.devices
LATE_UPLOADS = ("drop", "next_round")  # what becomes of an upload past the round's deadline
TRACKERS = ("none", "tensorboard", "mlflow")  # workbench.loop.tracking
DP_MODES = ("central", "local")  # workbench.loop.privacy
EPSILON = "epsilon"  # the results column of a DP run: ε at dp_delta spent after the round

# the method the report's verdict, the cost tables and the protocol note are about (the
# workbench's subject), and the rival the verdict also compares it with; both are parameters
REFERENCE_METHOD = "fedlora"
RIVAL_METHOD = "fedproto"
# the control with nothing shared: studies match it to a method's local compute
CONTROL_METHOD = "standalone"

# upper limits of counts, with the reason a refusal gives
MAX_SEED = 2**32 - 1
SEED_WHY = "numpy and scikit-learn take seeds below 2**32"
MAX_ROUNDS, MAX_EPOCHS = 100_000, 1_000
TOO_LONG = "far beyond any federated schedule; a run this long would take days"
MAX_CLIENTS = 10_000
CLIENTS_WHY = "each client needs a local test split, and CIFAR holds 10,000 test images"
# rounds before the last evaluate a seeded panel of this many clients by default (all up to it)
EVAL_CLIENTS = 1_000

# files of a run directory and of a sweep folder
CONFIG_FILE, TABLE_FILE, SUMMARY_FILE = "config.json", "results.csv", "summary.json"
EVENTS_FILE = "events.csv"  # refused uploads of a run, one row each
CHECKPOINT_FILE = "checkpoint.pt"
SWEEP_FILE, STATUS_FILE, REPORT_FILE = "sweep.json", "status.json", "report.html"
LOCK_FILE = "owner.lock"  # the process that owns a sweep folder (workbench.core.folder_lock)
TRACKING_DIR = "tracking"  # a run's or sweep's default TensorBoard/MLflow store
TRIALS_DIR = "tuning"  # a tune folder's trials: <tune>/tuning/points/<id>/run
TIMING_FILE = "timing.json"  # {"experiment_s": seconds the last run_experiment call computed}
TUNE_FILE = "tune.json"  # a tune folder's record: storage, spec, per method its trials and best


class Seed(IntEnum):
    """What a derived seed is for: `derived_seed(run seed, round or client, …, Seed.X)`. These
    are the purposes every method shares; a method's own (the missing numbers) are declared in
    its module (`Algorithm.seed_purposes`), and the registry refuses one that clashes with these
    or with another method's."""

    CLIENT_MODEL = 1  # a client's private model (with the client id)
    BATCHES = 3  # a client's batch order in a round (with round and client id)
    ATTACK = 6  # a malicious client's noise (with round and client id) and who is malicious
    SAMPLING = 7  # which clients a round samples (with the round)
    SUBSAMPLE = 8  # which training samples a client keeps under max_train_samples
    VALIDATION = 9  # which training samples a client holds out for validation
    DROPOUT = 10  # which sampled clients drop out of a round (with the round)
    DEVICES = 11  # each client's device speeds under device_profile
    DP_NOISE = 12  # client-level DP noise (with the round; local mode also the client id)
    EVALUATION = 13  # which clients rounds before the last evaluate (eval_clients)
