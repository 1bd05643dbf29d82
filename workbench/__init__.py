"""FedLoRA workbench: model-heterogeneous personalized federated learning with LoRA adapters."""

__version__ = "0.1.0"
