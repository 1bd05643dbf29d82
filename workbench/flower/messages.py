"""The message protocol between the workbench's ServerApp and ClientApp: every key, once.

Records of a message's RecordDict, the keys of its config record, and the metric keys a client
reports. Both sides import these names, so they cannot drift apart.
"""

from __future__ import annotations

# records of a RecordDict
ARRAYS = "arrays"  # ArrayRecord: the broadcast (down) or the upload (up)
CONFIG = "config"  # ConfigRecord: the server's instructions
METRICS = "metrics"  # MetricRecord: a client's training costs
EVALUATION = "evaluation"  # MetricRecord: a client's evaluation
INFO = "info"  # ConfigRecord: who a node serves (reply to a query)

# keys of the CONFIG record
ROUND = "server-round"
EVALUATE = "evaluate"  # evaluate right after training (an evaluation round)

# keys of METRICS, EVALUATION and INFO
TRAIN_FLOPS, TRAIN_LOSS, NUM_EXAMPLES = "train-flops", "train-loss", "num-examples"
ACCURACY, LOSS, NUM_TRAIN, NUM_TEST = "accuracy", "loss", "num-train", "num-test"
VAL_ACCURACY, VAL_LOSS, NUM_VAL = "val-accuracy", "val-loss", "num-val"  # NaN, NaN, 0: no split
PARTITION_ID, MODEL, TORCH_THREADS = "partition-id", "model", "torch-threads"
ROLLED_BACK = "rolled-back"  # 1 when the client's update was not finite and it rolled back
UPDATE_NORM = "update-norm"  # METRICS: L2 norm of the update the upload carries
STEPS = "steps."  # METRICS: "steps.<phase>", optimizer steps of one training phase
DIAGNOSTIC = "diagnostic."  # EVALUATION: "diagnostic.<name>", what the method's probe measured
