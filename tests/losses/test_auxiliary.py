"""Loss terms on auxiliary outputs: label remapping and reading ``SegOutput.aux``."""

from __future__ import annotations

import pytest
import torch

from octseg.losses import DiceCELoss
from octseg.losses.auxiliary import AuxiliaryLoss, remap_labels
from octseg.models.base import SegOutput


def test_remap_labels_keeps_ignore_index() -> None:
    target = torch.tensor([[[0, 1, 8], [9, 255, 2]]])
    lookup = torch.tensor([0, 1, 1, 1, 1, 1, 1, 1, 0, 1])
    assert remap_labels(target, lookup, 255).tolist() == [[[0, 1, 0], [1, 255, 1]]]


def test_remap_labels_rejects_labels_outside_the_lookup() -> None:
    with pytest.raises(ValueError, match="outside 0..2"):
        remap_labels(torch.tensor([[[0, 5]]]), torch.tensor([0, 1, 1]), 255)


def test_auxiliary_loss_scores_the_aux_logits_on_remapped_targets() -> None:
    torch.manual_seed(0)
    lookup = torch.tensor([0, 1, 1, 0])
    target = torch.tensor([[[0, 1], [2, 3]]])
    aux_logits = torch.randn(1, 2, 2, 2)
    output = SegOutput(
        logits=torch.randn(1, 4, 2, 2), aux={"head": aux_logits, "head_map": lookup}
    )
    term = DiceCELoss()
    loss = AuxiliaryLoss(term, "head", "head_map")(output, {"mask": target})
    expected = term.compute(aux_logits, torch.tensor([[[0, 1], [1, 0]]]))
    torch.testing.assert_close(loss, expected)
    # Without a map the mask is used as it is.
    plain = AuxiliaryLoss(term, "head")(
        SegOutput(logits=aux_logits, aux={"head": aux_logits}), {"mask": target.clamp(max=1)}
    )
    torch.testing.assert_close(plain, term.compute(aux_logits, target.clamp(max=1)))


def test_missing_aux_output_names_what_exists() -> None:
    output = SegOutput(logits=torch.zeros(1, 2, 2, 2), aux={"other": 1})
    with pytest.raises(KeyError, match="stage1_logits.*other"):
        AuxiliaryLoss(DiceCELoss(), "stage1_logits")(output, {"mask": torch.zeros(1, 2, 2).long()})


def test_term_without_compute_is_rejected() -> None:
    with pytest.raises(TypeError, match="compute"):
        AuxiliaryLoss(torch.nn.Identity(), "head")
