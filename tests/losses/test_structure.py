"""The K-class structure loss (M2SNet/MSNet) on hand-built masks."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from octseg.losses.structure import StructureLoss, border_weights, structure_loss
from octseg.models.base import SegOutput


def _official_binary(pred: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The official single-channel formula (train.py), written out for reference."""
    weit = 1 + 5 * (F.avg_pool2d(mask, kernel_size=31, stride=1, padding=15) - mask).abs()
    wbce = F.binary_cross_entropy_with_logits(pred, mask, reduction="none")
    wbce = (weit * wbce).sum(dim=(2, 3)) / weit.sum(dim=(2, 3))
    prob = pred.sigmoid()
    inter = (prob * mask * weit).sum(dim=(2, 3))
    union = ((prob + mask) * weit).sum(dim=(2, 3))
    return (wbce + 1 - (inter + 1) / (union - inter + 1)).mean()


def _bands(h: int = 24, w: int = 20) -> torch.Tensor:
    """Two masks of three horizontal bands (labels 0, 1, 2), the second shifted."""
    rows = torch.arange(h)
    a = (rows * 3 // h)[:, None].expand(h, w)
    b = ((rows + 5) * 3 // h).clamp(max=2)[:, None].expand(h, w)
    return torch.stack([a, b]).contiguous()


def test_border_weights_on_a_single_pixel() -> None:
    y = torch.zeros(1, 1, 5, 5)
    y[0, 0, 2, 2] = 1.0
    w = border_weights(y, kernel_size=3, gain=5.0)
    expected = torch.ones(5, 5)
    expected[1:4, 1:4] = 1 + 5 / 9  # neighbours see 1/9 of foreground
    expected[2, 2] = 1 + 5 * 8 / 9  # the pixel itself: |1/9 - 1|
    torch.testing.assert_close(w[0, 0], expected)


@pytest.mark.parametrize("include_background", [True, False])
def test_perfect_prediction_gives_zero(include_background: bool) -> None:
    mask = _bands()
    logits = 40.0 * F.one_hot(mask, 3).permute(0, 3, 1, 2).float()
    loss = structure_loss(logits, mask, include_background=include_background)
    assert 0.0 <= loss.item() < 1e-5


def test_worse_predictions_cost_more() -> None:
    mask = _bands()
    perfect = 8.0 * F.one_hot(mask, 3).permute(0, 3, 1, 2).float()
    shifted = 8.0 * F.one_hot(mask.roll(3, dims=1), 3).permute(0, 3, 1, 2).float()
    uniform = torch.zeros_like(perfect)
    losses = [structure_loss(x, mask).item() for x in (perfect, shifted, uniform)]
    assert losses[0] < losses[1] and losses[0] < losses[2]


def test_two_classes_without_background_is_the_official_binary_loss() -> None:
    torch.manual_seed(0)
    logits = torch.randn(2, 2, 40, 36)
    mask = torch.zeros(2, 40, 36, dtype=torch.long)
    mask[0, 10:25, 5:30] = 1
    mask[1, 20:, :] = 1
    ours = structure_loss(logits, mask, include_background=False)
    official = _official_binary(logits[:, 1:] - logits[:, :1], mask[:, None].float())
    torch.testing.assert_close(ours, official, rtol=1e-5, atol=1e-6)


def test_k_classes_average_the_one_vs_rest_losses() -> None:
    """Each class k is the binary loss of its softmax probability (logit log p_k - log(1-p_k))."""
    torch.manual_seed(1)
    logits = torch.randn(2, 3, 32, 32)
    mask = _bands(32, 32)
    log_p = logits.log_softmax(1)
    per_class = []
    for k in range(3):
        binary_logit = log_p[:, k : k + 1] - torch.log1p(-log_p[:, k : k + 1].exp())
        per_class.append(_official_binary(binary_logit, (mask == k)[:, None].float()))
    expected = torch.stack(per_class).mean()
    torch.testing.assert_close(structure_loss(logits, mask), expected, rtol=1e-5, atol=1e-6)


def test_ignored_pixels_do_not_count() -> None:
    torch.manual_seed(2)
    mask = _bands()
    mask[:, :, :4] = 255
    logits = torch.randn(2, 3, 24, 20, requires_grad=True)
    loss = structure_loss(logits, mask)
    loss.backward()
    assert torch.isfinite(loss)
    assert torch.all(logits.grad[..., :4] == 0)
    changed = logits.detach().clone()
    changed[..., :4] = 100.0 * torch.randn(2, 3, 24, 4)
    torch.testing.assert_close(structure_loss(changed, mask), loss.detach())
    # Nothing annotated: nothing to learn.
    assert structure_loss(logits, torch.full_like(mask, 255)).item() == 0.0


def test_confident_mistakes_stay_finite() -> None:
    mask = _bands()
    logits = -200.0 * F.one_hot(mask, 3).permute(0, 3, 1, 2).float()
    logits.requires_grad_(True)
    loss = structure_loss(logits, mask)
    loss.backward()
    assert torch.isfinite(loss) and loss.item() > 5.0
    assert torch.isfinite(logits.grad).all()


def test_term_reads_logits_and_mask_and_validates() -> None:
    mask = _bands()
    logits = torch.randn(2, 3, 24, 20)
    term = StructureLoss(include_background=False)
    torch.testing.assert_close(
        term(SegOutput(logits=logits), {"mask": mask}),
        structure_loss(logits, mask, include_background=False),
    )
    with pytest.raises(ValueError, match="odd kernel_size"):
        StructureLoss(kernel_size=30)
    with pytest.raises(ValueError, match="at least 2 logits"):
        structure_loss(torch.randn(1, 1, 4, 4), torch.zeros(1, 4, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="outside 0..2"):
        structure_loss(logits, mask + 1)
