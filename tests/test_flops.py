"""FlopCounterMode's count of FedLoRA's training steps, cross-checked against an analytic formula.

Convention: 2 FLOPs per multiply-add of matmuls and convolutions; backward of a layer costs one
forward-sized op for the weight gradient (only if the weight is trainable) and one for the input
gradient (only if something upstream needs it). Elementwise work is not counted.
"""

import pytest
import torch
from helpers import make_algorithm

from workbench.core.accounting import FlopMeter, payload_bytes
from workbench.core.zoo import REPRESENTATION_DIM as D
from workbench.core.zoo import ZOO


def layer_flops(name: str, classes: int, rank: int) -> dict[str, int]:
    """Forward FLOPs per sample of each layer of a zoo model with a head adapter of rank r."""
    s = ZOO[name]
    return {
        "conv1": 2 * 3 * 25 * s.conv1 * 28 * 28,
        "conv2": 2 * s.conv1 * 25 * s.conv2 * 10 * 10,
        "fc1": 2 * s.flat_dim * s.fc1,
        "fc2": 2 * s.fc1 * D,
        "head": 2 * D * classes,
        "A": 2 * D * rank,
        "B": 2 * rank * classes,
    }


def analytic_step(name: str, phase: str, mu: float, batch: int, classes: int = 10, rank: int = 4) -> int:
    f = layer_flops(name, classes, rank)
    body = f["conv1"] + f["conv2"] + f["fc1"] + f["fc2"]
    if phase == "adapter":  # model frozen: forward all; grads for B (weight + input) and A (weight)
        per_sample = body + f["head"] + f["A"] + f["B"] + (2 * f["B"] + f["A"])
    elif mu in (0.0, 1.0):  # one output; mu=1 runs the frozen branch too (input grads only)
        branch = 0 if mu == 0.0 else f["A"] + f["B"]
        per_sample = 3 * (body + f["head"]) - f["conv1"] + 2 * branch
    else:  # features once, head twice (local + combined), frozen branch once
        forward = body + 2 * f["head"] + f["A"] + f["B"]
        backward = 2 * (body + 2 * f["head"]) - f["conv1"] + f["A"] + f["B"]
        per_sample = forward + backward
    return batch * per_sample


@pytest.mark.parametrize("name", sorted(ZOO))
@pytest.mark.parametrize("mu", [0.0, 0.5, 1.0])
def test_counted_flops_match_the_analytic_formula(name, mu):
    algorithm, (client,) = make_algorithm(num_clients=1, models=name, mu=mu, batch_size=8)
    client.data = type(client.data)(
        client.data.train_x[:8], client.data.train_y[:8], client.data.test_x, client.data.test_y
    )
    generator = torch.Generator().manual_seed(0)
    assert algorithm.train_model(client, generator).flops == analytic_step(name, "model", mu, 8)
    assert algorithm.train_adapter(client, generator).flops == analytic_step(name, "adapter", mu, 8)


def test_adapter_phase_is_much_cheaper_than_the_model_phase():
    assert analytic_step("cnn1", "adapter", 0.5, 1) < 0.5 * analytic_step("cnn1", "model", 0.5, 1)


def test_meter_counts_each_key_once_and_reuses_it():
    meter, calls = FlopMeter(), []
    a, b = torch.randn(4, 5), torch.randn(5, 6)

    def step():
        calls.append(1)
        return a @ b

    _, first = meter.step("k", step)
    _, second = meter.step("k", step)
    assert first == second == 2 * 4 * 5 * 6 and len(calls) == 2
    assert meter.known() == {"k": 240}


def test_payload_bytes_is_numel_times_element_size():
    payload = {
        "a": torch.zeros(4, 500),
        "b": torch.zeros(10, 4, dtype=torch.float16),
        "c": torch.zeros(3, dtype=torch.int64),
    }
    assert payload_bytes(payload) == 4 * 2000 + 2 * 40 + 8 * 3
