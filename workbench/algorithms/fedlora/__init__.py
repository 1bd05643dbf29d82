"""FedLoRA as one unit: the method and its knobs (`algorithm`), where its adapter sits
(`placements`, plain data), PEFT's LoRA layers and the parallel branch that carry it
(`adapters`, `branch`). Importing this package does not import torch."""

from workbench.algorithms.fedlora.algorithm import FedLoRA, FedLoRAParams

__all__ = ["FedLoRA", "FedLoRAParams"]
