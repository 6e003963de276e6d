"""BioNet's thickness target and regulariser on hand-built masks."""

from __future__ import annotations

import pytest
import torch

from octseg.losses.biomarker import BiomarkerLoss, column_thickness, masked_l1, scan_extent
from octseg.models.base import SegOutput

LOOKUP = torch.tensor([0, 0, 1, 1])  # labels 2 and 3 are choroid
IGNORE = 255


def _mask() -> torch.Tensor:
    """One 6 x 5 scan: column 0 no choroid, 1 two pixels, 2 five (labels 2 and 3 mixed),
    3 three pixels and one ignored pixel, 4 four pixels."""
    m = torch.zeros(6, 5, dtype=torch.long)
    m[4:, 1] = 2
    m[1:, 2] = torch.tensor([2, 3, 2, 3, 2])
    m[3:, 3] = 3
    m[0, 3] = IGNORE
    m[2:, 4] = 2
    return m[None]


def test_thickness_counts_choroid_pixels_per_column() -> None:
    thickness, valid = column_thickness(_mask(), LOOKUP, IGNORE)
    assert valid.tolist() == [[True, True, True, False, True]]
    assert thickness.tolist() == [[0.0, 2.0, 5.0, 0.0, 4.0]]


def test_thickness_in_micrometres_uses_each_scans_axial_spacing() -> None:
    mask = torch.cat([_mask(), _mask()])
    spacing = torch.tensor([[3.87, 11.3, 123.0], [2.0, 5.0, 60.0]])
    thickness, _ = column_thickness(mask, LOOKUP, IGNORE, unit="um", spacing_um=spacing)
    torch.testing.assert_close(thickness[0], torch.tensor([0.0, 2.0, 5.0, 0.0, 4.0]) * 3.87)
    torch.testing.assert_close(thickness[1], torch.tensor([0.0, 4.0, 10.0, 0.0, 8.0]))
    with pytest.raises(ValueError, match="spacing_um"):
        column_thickness(mask, LOOKUP, IGNORE, unit="um")
    with pytest.raises(ValueError, match="unit"):
        column_thickness(mask, LOOKUP, IGNORE, unit="mm")


def test_batch_padding_is_not_an_unannotated_column() -> None:
    """A 4 x 3 scan padded to 6 x 5 in a batch: padding (ignore_index) outside its true size
    neither invalidates its columns nor counts; the padded columns are not valid."""
    mask = torch.full((1, 6, 5), IGNORE, dtype=torch.long)
    mask[0, :4, :3] = torch.tensor([[0, 0, 0], [0, 2, 0], [2, 2, 0], [2, 3, IGNORE]])
    thickness, valid = column_thickness(mask, LOOKUP, IGNORE, orig_hw=torch.tensor([[4, 3]]))
    assert valid.tolist() == [[True, True, False, False, False]]
    assert thickness.tolist() == [[2.0, 3.0, 0.0, 0.0, 0.0]]
    extent = scan_extent((1, 6, 5), torch.tensor([[4, 3]]), torch.device("cpu"))
    assert int(extent.sum()) == 12 and bool(extent[0, 3, 2]) and not bool(extent[0, 4, 0])


def test_masked_l1_averages_valid_columns_only() -> None:
    pred = torch.tensor([[1.0, 2.0, 10.0]])
    target = torch.tensor([[0.0, 4.0, 0.0]])
    valid = torch.tensor([[True, True, False]])
    assert masked_l1(pred, target, valid).item() == pytest.approx(1.5)
    assert masked_l1(pred, target, torch.zeros_like(valid)).item() == 0.0


def test_loss_term_compares_the_prediction_with_the_mask_thickness() -> None:
    out = SegOutput(
        logits=torch.zeros(1, 4, 6, 5),
        aux={
            "thickness_pred": torch.tensor([[1.0, 2.0, 3.0, 9.0, 4.0]]),
            "lcs_target_map": LOOKUP,
        },
    )
    loss = BiomarkerLoss(ignore_index=IGNORE)(out, {"mask": _mask()})
    assert loss.item() == pytest.approx((1 + 0 + 2 + 0) / 4)  # column 3 is not annotated
    with pytest.raises(KeyError, match="loss=bionet"):
        BiomarkerLoss()(SegOutput(logits=torch.zeros(1, 4, 6, 5)), {"mask": _mask()})
