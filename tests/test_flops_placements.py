"""Counted FLOPs of FedLoRA's phases for every adapter placement against an analytic count.

Same convention as test_flops: 2 FLOPs per multiply-add; backward costs one forward-sized op per
weight gradient (trainable weights only) and one per input gradient (only where something
upstream needs it); elementwise work is free. The adapter's factors A (r×d_in) and B (d_out×r)
cost 2·d_in·r and 2·r·d_out forward per sample, with (d_in, d_out) from the placement's site.
"""

import pytest
import torch
from helpers import make_algorithm, placed

from workbench.algorithms.fedlora.placements import PLACEMENTS
from workbench.core.zoo import REPRESENTATION_DIM as D
from workbench.core.zoo import ZOO

CNN_PLACEMENTS = tuple(p for p in PLACEMENTS if p != "attention")  # attention: ViTs only (test_families)

RANK, CLASSES, BATCH = 3, 10, 8


def costs(name: str, placement: str) -> dict[str, int]:
    """Forward FLOPs per sample: the private body (conv1…fc2), the head, the adapter's A and B."""
    s = ZOO[name]
    ((d_in, d_out),) = placed(placement, RANK).site_shapes(name, CLASSES).values()
    return {
        "conv1": 2 * 3 * 25 * s.conv1 * 28 * 28,
        "body": 2 * 3 * 25 * s.conv1 * 28 * 28
        + 2 * s.conv1 * 25 * s.conv2 * 10 * 10
        + 2 * s.flat_dim * s.fc1
        + 2 * s.fc1 * D,
        "head": 2 * D * CLASSES,
        "A": 2 * d_in * RANK,
        "B": 2 * RANK * d_out,
    }


def model_phase(name: str, placement: str, mu: float) -> int:
    """Adapter frozen. LoRA layers (head, fc2) sit on the gradient path to the private weights,
    so their frozen factors pass input gradients; a parallel branch reads only the image and
    needs no backward at all."""
    c = costs(name, placement)
    on_path = placement in ("head", "fc2")
    branch_backward = c["A"] + c["B"] if on_path else 0
    if mu == 0.0:
        return 3 * (c["body"] + c["head"]) - c["conv1"]
    if mu == 1.0:
        return 3 * (c["body"] + c["head"]) - c["conv1"] + c["A"] + c["B"] + branch_backward
    heads = 1 if placement == "parallel_logits" else 2  # logits branch: local + Δ, one head
    forward = c["body"] + heads * c["head"] + c["A"] + c["B"]
    return forward + 2 * (c["body"] + heads * c["head"]) - c["conv1"] + branch_backward


def adapter_phase(name: str, placement: str) -> int:
    """Model frozen: forward everything; B's weight and input gradients, A's weight gradient;
    the head passes an input gradient unless the adapter adds to the logits after it."""
    c = costs(name, placement)
    head_backward = 0 if placement in ("head", "parallel_logits") else c["head"]
    return c["body"] + c["head"] + c["A"] + c["B"] + 2 * c["B"] + c["A"] + head_backward


def counted(name: str, placement: str, mu: float, **extra) -> tuple[int, int]:
    algorithm, (client,) = make_algorithm(
        num_clients=1, models=name, mu=mu, batch_size=BATCH, rank=RANK, adapter_placement=placement, **extra
    )
    client.data = type(client.data)(
        client.data.train_x[:BATCH], client.data.train_y[:BATCH], client.data.test_x, client.data.test_y
    )
    generator = torch.Generator().manual_seed(0)
    return (algorithm.train_model(client, generator).flops, algorithm.train_adapter(client, generator).flops)


@pytest.mark.parametrize("placement", CNN_PLACEMENTS)
@pytest.mark.parametrize("name", ["cnn1", "cnn2", "cnn5"])
def test_counted_flops_match_the_analytic_count(placement, name):
    model, adapter = counted(name, placement, 0.5)
    assert model == BATCH * model_phase(name, placement, 0.5)
    assert adapter == BATCH * adapter_phase(name, placement)


@pytest.mark.parametrize("placement", CNN_PLACEMENTS)
@pytest.mark.parametrize("mu", [0.0, 1.0])
def test_single_output_model_phase_matches_the_analytic_count(placement, mu):
    model, _ = counted("cnn3", placement, mu)
    assert model == BATCH * model_phase("cnn3", placement, mu)


def test_gradient_clipping_costs_no_counted_flops():
    assert counted("cnn4", "fc2", 0.5, max_grad_norm=1e-3) == counted("cnn4", "fc2", 0.5)


def test_the_head_formula_here_agrees_with_test_flops():
    from test_flops import analytic_step

    for name in ZOO:
        assert BATCH * model_phase(name, "head", 0.5) == analytic_step(name, "model", 0.5, BATCH, rank=RANK)
        assert BATCH * adapter_phase(name, "head") == analytic_step(name, "adapter", 0.5, BATCH, rank=RANK)
