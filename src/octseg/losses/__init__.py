"""Loss terms and the weighted objective."""

from octseg.losses.objective import Objective
from octseg.losses.terms import DeepSupervisionLoss, DiceCELoss, SoftDiceLoss

__all__ = ["Objective", "DiceCELoss", "DeepSupervisionLoss", "SoftDiceLoss"]
