"""The live tuner for JupyterLab: a method's own knobs drive background runs drawn in three
linked panels."""

from workbench.lab.tuner.tuner import Tuner

__all__ = ["Tuner"]
