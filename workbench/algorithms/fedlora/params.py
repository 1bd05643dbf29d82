"""FedLoRA's knobs as one parameter section, and the rules read from them (no torch).

Besides rank, α and μ, the section holds the variants the issue-21 study compares (see
docs/fedlora-protocol.md): how the adapter is scaled (α/r, or α/√r as rsLoRA) and initialised
(B = 0 as LoRA, or a small random B), its learning rate and LoRA+'s separate rate for B, its
epochs (fixed, or the sister code's rule: model epochs + k), whether the deployed model
predicts with the adapter or with the private model alone, and how uploads are weighted.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from workbench.algorithms.fedlora.placements import PLACEMENTS, placements_help
from workbench.core.facts import MAX_EPOCHS, TOO_LONG
from workbench.core.params import Section, param

LORA_TARGETS = ("head", "fc1", "fc2")
MU_SCHEDULES = ("constant", "warmup")
ADAPTER_INITS = ("lora", "gaussian", "small_b")  # lora and gaussian are PEFT's init_lora_weights
ADAPTER_SCHEDULES = ("fixed", "model_plus")
INFERENCE_PATHS = ("combined", "private")
ADAPTER_WEIGHTS = ("samples", "uniform")


@dataclass(frozen=True)
class FedLoRAParams(Section):
    rank: int = param(4, "LoRA rank r", ge=1)
    lora_alpha: float = param(
        2.0, "LoRA scale numerator: the branch is scaled by alpha/sqrt(r) (rsLoRA) or alpha/r", gt=0
    )
    use_rslora: bool = param(
        True,
        "rsLoRA: scale the branch by alpha/sqrt(r) (PEFT's use_rslora), so a step moves the output "
        "alike at every rank; false: alpha/r, whose steps grow as the rank falls (docs/fedlora-protocol.md)",
    )
    adapter_init: str = param(
        "small_b",
        "lora: A Kaiming-uniform, B 0 (PEFT's default); gaussian: A ~ N(0, 1/r²), B 0 (PEFT's "
        "gaussian); small_b: A as lora, B ~ N(0, adapter_b_std²), so A trains from the first step",
        choices=ADAPTER_INITS,
    )
    adapter_b_std: float = param(
        0.1,
        "small_b: standard deviation of B's initial entries",
        gt=0,
        le=1,
        why="a larger B is no longer a small start beside the private model",
    )
    mu: float = param(0.5, "weight of the adapter-on loss while training the model", ge=0, le=1)
    mu_schedule: str = param(
        "constant",
        "constant: mu in every round; warmup: mu·min(1, t/mu_warmup_rounds) in round t",
        choices=MU_SCHEDULES,
    )
    mu_warmup_rounds: int = param(5, "warmup: rounds over which mu rises linearly to its value", ge=1)
    adapter_epochs: int = param(
        1,
        "local epochs training the adapter per round (model_plus: the k added to model_epochs)",
        ge=1,
        le=MAX_EPOCHS,
        why=TOO_LONG,
    )
    adapter_schedule: str = param(
        "fixed",
        "fixed: adapter_epochs epochs per round; model_plus: model_epochs + adapter_epochs "
        "(the authors' sister-code rule)",
        choices=ADAPTER_SCHEDULES,
    )
    adapter_lr: float = param(0.01, "SGD learning rate of the adapter (of A under LoRA+)", gt=0)
    lora_plus_ratio: float = param(
        4.0,
        "LoRA+: B's learning rate is adapter_lr times this (1: one rate for A and B; LoRA+ "
        "suggests up to 16, which diverges here once clients take 10 or more adapter steps per "
        "round; use 1 with the parallel placements, whose branch reads 3072 pixels)",
        ge=1,
        le=1000,
        why="beyond LoRA+'s studied range, B's steps diverge",
    )
    max_grad_norm: float = param(
        0.0,
        "clip each step's gradient L2 norm to this in both phases "
        "(0: off; the authors' sister code clips at 50)",
        ge=0,
    )
    adapter_placement: str = param("head", placements_help(), choices=lambda: tuple(PLACEMENTS))
    lora_targets: tuple[str, ...] = param(
        ("head",),
        "Linear layers carrying the adapter when adapter_placement is head",
        choices=LORA_TARGETS,
        unique=True,
    )
    adapter_inference: str = param(
        "combined",
        "what a client deploys and is evaluated on: combined (private model with its adapter) "
        "or private (the private model alone, as the sister code evaluates)",
        choices=INFERENCE_PATHS,
    )
    adapter_weights: str = param(
        "samples",
        "how the server averages adapters: samples (weighted by training samples) or uniform",
        choices=ADAPTER_WEIGHTS,
    )
    share_adapter: bool = param(
        True,
        "false: ablation, every client keeps its own adapter and "
        "nothing is sent (same training, no federation)",
    )


def mu_at(params: FedLoRAParams, round_: int | None) -> float:
    """μ of a round under the schedule (outside a round: μ itself)."""
    if params.mu_schedule == "constant" or round_ is None:
        return params.mu
    return params.mu * min(1.0, round_ / params.mu_warmup_rounds)


def adapter_epochs(params: FedLoRAParams, model_epochs: int) -> int:
    """Epochs of the adapter phase: fixed, or model epochs + k (the sister code's rule)."""
    if params.adapter_schedule == "model_plus":
        return model_epochs + params.adapter_epochs
    return params.adapter_epochs


def scaling(alpha: float, rank: int, rslora: bool) -> float:
    """The branch's scale: α/r (LoRA) or α/√r (rsLoRA), as PEFT computes it."""
    return alpha / math.sqrt(rank) if rslora else alpha / rank
