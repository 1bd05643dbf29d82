"""FedLoRA as one unit: the method (`algorithm`), its knobs (`params`), where its adapter sits
(`placements`: one class per placement), PEFT's LoRA layers and the parallel branch that carry it
(`adapters`, `branch`). Importing this package does not import torch."""

from workbench.algorithms.fedlora.algorithm import FedLoRA
from workbench.algorithms.fedlora.params import FedLoRAParams

__all__ = ["FedLoRA", "FedLoRAParams"]
