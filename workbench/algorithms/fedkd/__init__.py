"""FedKD as one unit: the method and its knobs (`algorithm`) and the SVD compression of its
uploads (`compression`). Importing this package does not import torch."""

from workbench.algorithms.fedkd.algorithm import FedKD

__all__ = ["FedKD"]
