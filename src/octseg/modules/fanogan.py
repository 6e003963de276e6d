"""f-AnoGAN's training procedure and its evaluation as fluid segmentation.

:class:`FAnoGANModule` trains :class:`~octseg.models.fanogan.FAnoGAN` in two stages (Schlegl et
al., Medical Image Analysis 2019), with manual optimisation:

1. **GAN stage** (epochs ``0 .. gan_epochs - 1``): WGAN-GP on healthy 64 x 64 patches. Every
   training step is one critic step (a new batch of real patches, ``lambda_gp`` = 10); every
   ``n_critic``-th critic step (5) is followed by one generator step. Adam, beta = (0, 0.9).
2. **Encoder stage** (from epoch ``gan_epochs``): generator and critic frozen
   (``requires_grad_(False)``, eval mode, out of the optimizer); the encoder trains with the
   izi_f loss ``MSE(x, G(E(x))) + kappa MSE(f(x), f(G(E(x))))`` (the official code's RMSProp,
   lr 5e-5). The switch rebuilds the optimizers through ``trainer.strategy.setup_optimizers``
   as :class:`~octseg.modules.two_stage.TwoStageModule` does; the stage is a persistent buffer,
   so a resume continues in the checkpoint's stage.

**Healthy patches.** The B-scans carry masks, but the method must learn from healthy tissue
only: a training patch is a 64 x 64 window of a training B-scan (after augmentation) that
contains no fluid label (``fluid_labels``, the dataset's ``anatomy.fluid_labels``) and no
``ignore_index`` pixel (unannotated columns may hide fluid; padding), and, when
``centre_labels`` is set (default: the retinal layers and fluid, as the paper samples patches
inside the retina), whose centre pixel has one of those labels. Each step draws
``patches_per_step`` such windows uniformly among all healthy windows of the batch (without
replacement when there are enough). Masks are read for this choice only; no label reaches a loss.

**Image-level normal sets** (``normal_class`` set: Kermany, OCT-C8, OCTID, whose B-scans carry
a class and no mask): the training patches are windows anywhere inside the B-scans of the
normal class (``class_index`` equal to ``normal_class``'s position in ``image_classes``; other
classes and batch padding are never drawn), as the paper trains on scans of healthy subjects.
Such a set has no pixel labels, so validation and test score B-scan-level detection only: the
B-scan anomaly score against "not ``normal_class``" (``val/scan_auroc``, ``val/scan_ap``;
``test/scan_auroc``, ``test/scan_ap`` and ``test/scan_auroc/<class>`` for each abnormal class
against the normal one), through ``trainer.test`` (``predicts_scans`` is off).

**Evaluation as fluid segmentation.** ``predict_step`` returns per B-scan the two-class view
``[rest, fluid]`` of the stitched residual ``r = |x - G(E(x))|`` on the ``[-1, 1]`` scale:
``p(fluid) = r / 2`` (``r`` lies in ``[0, 2]``), ``pred = p(fluid) >= threshold``, the target
binarised (fluid labels -> 1, ``ignore_index`` kept, the rest -> 0) and ``scores = [NaN,
B-scan anomaly score]`` for B-scan-level detection. The threshold is chosen on validation at
every validation epoch (the one maximising the fluid Dice over the validation B-scans) and
stored in the state dict, so the best checkpoint carries the threshold chosen with its weights.
:meth:`evaluation_suite` rewrites the metric suite to this two-class label space (and adds the
``probabilistic`` and ``detection`` families).

Logged: ``train/critic/wasserstein``, ``train/critic/gradient_penalty``, ``train/critic/loss``,
``train/generator/loss``, ``train/encoder/{loss,image,feature}``, ``train/stage_encoder``,
``train/healthy_patches``; ``val/dice``, ``val/auroc``, ``val/ap`` (fluid vs rest, pixels),
``val/threshold`` and ``val/anomaly_score`` (mean B-scan score).

Limitations: single process (validation statistics are not gathered across DDP ranks); while
the GAN trains, validation scores the untrained encoder (early stopping whose patience ends in
the GAN stage is refused at fit start; the best checkpoint may still come from the GAN stage if
the encoder never does better).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torchmetrics.functional.classification import binary_auroc, binary_average_precision

from octseg.losses.adversarial import critic_loss, generator_loss
from octseg.metrics.probabilistic import ap_from_histogram, auroc_from_histogram
from octseg.metrics.probabilistic import probability_histogram as _histogram
from octseg.models.base import SegOutput
from octseg.models.fanogan import PATCH, FAnoGAN, extract_patches
from octseg.modules.two_stage import check_patience_outlasts

__all__ = ["FAnoGANModule", "best_dice_threshold", "binarise", "healthy_windows"]

log = logging.getLogger(__name__)


def binarise(mask: torch.Tensor, fluid_labels: Sequence[int], ignore_index: int) -> torch.Tensor:
    """Fluid vs rest: fluid labels -> 1, ``ignore_index`` kept, every other label -> 0."""
    fluid = torch.isin(mask, torch.as_tensor(list(fluid_labels), device=mask.device))
    out = fluid.long()
    return torch.where(mask == ignore_index, torch.full_like(out, ignore_index), out)


def healthy_windows(
    mask: torch.Tensor,
    fluid_labels: Sequence[int],
    ignore_index: int,
    centre_labels: Sequence[int] | None = None,
    patch: int = PATCH,
) -> torch.Tensor:
    """Which ``patch x patch`` windows of each mask are healthy (see the module docstring).

    Args:
        mask: labels ``[B, H, W]`` (``ignore_index`` where unannotated or padded).
        fluid_labels: labels that make a window unhealthy.
        ignore_index: unannotated label; a window holding one is not used either.
        centre_labels: labels the centre pixel ``(y + patch // 2, x + patch // 2)`` must have
            (None: any).
        patch: window side.

    Returns:
        bool ``[B, H - patch + 1, W - patch + 1]`` indexed by the window's top-left corner
        (``[B, 0, 0]`` when the masks are smaller than a window).
    """
    b, h, w = mask.shape
    if h < patch or w < patch:
        return torch.zeros(b, 0, 0, dtype=torch.bool, device=mask.device)
    bad = torch.isin(mask, torch.as_tensor(list(fluid_labels), device=mask.device))
    bad |= mask == ignore_index
    # Window sums of the bad pixels from an integral image: O(HW) whatever the window size.
    integral = F.pad(bad.int().cumsum(1).cumsum(2), (1, 0, 1, 0))
    sums = (
        integral[:, patch:, patch:]
        - integral[:, :-patch, patch:]
        - integral[:, patch:, :-patch]
        + integral[:, :-patch, :-patch]
    )
    healthy = sums == 0
    if centre_labels:
        c = patch // 2
        centre = mask[:, c : c + h - patch + 1, c : c + w - patch + 1]
        healthy &= torch.isin(centre, torch.as_tensor(list(centre_labels), device=mask.device))
    return healthy


def best_dice_threshold(hist: torch.Tensor) -> tuple[float, float]:
    """The score threshold maximising Dice from a fluid histogram ``[bins, 2]`` (negatives,
    positives per equal-width bin of ``[0, 1]``): ``(threshold, dice)``; predicting positive
    from bin ``k`` up means ``score >= k / bins``. ``(nan, nan)`` without positives."""
    bins = hist.shape[0]
    fp = hist[:, 0].flip(0).cumsum(0).flip(0)  # negatives at or above bin k
    tp = hist[:, 1].flip(0).cumsum(0).flip(0)
    positives = tp[0]
    if positives <= 0:
        return math.nan, math.nan
    dice = 2 * tp / (tp + fp + positives)
    k = int(torch.argmax(dice))
    return k / bins, float(dice[k])


def _binary_auroc(scores: torch.Tensor, positive: torch.Tensor) -> float:
    """torchmetrics' AUROC; NaN unless both positives and negatives are present."""
    if positive.all() or not positive.any():
        return math.nan
    return float(binary_auroc(scores, positive.long()))


def _binary_ap(scores: torch.Tensor, positive: torch.Tensor) -> float:
    """torchmetrics' average precision; NaN unless both kinds are present."""
    if positive.all() or not positive.any():
        return math.nan
    return float(binary_average_precision(scores, positive.long()))


class FAnoGANModule(pl.LightningModule):
    """f-AnoGAN training and evaluation (see the module docstring).

    Args:
        net: the generator, critic and encoder (:class:`~octseg.models.fanogan.FAnoGAN`).
        generator_optimizer: partial optimizer factory for the generator.
        critic_optimizer: partial optimizer factory for the critic.
        encoder_optimizer: partial optimizer factory for the encoder.
        gan_epochs: epochs of the GAN stage (>= 1); the encoder stage starts at this epoch.
        n_critic: critic steps per generator step (5).
        lambda_gp: weight of the gradient penalty (10).
        patches_per_step: healthy patches per training step (the paper's batch of 64).
        fluid_labels: the dataset's fluid labels (``${dataset.anatomy.fluid_labels}``).
        centre_labels: labels a training patch's centre must have (None: anywhere).
        ignore_index: the dataset's unannotated label.
        image_mean: the DataModule's intensity mean (images are ``(x - mean) / std`` of ``x``
            in ``[0, 1]``); used to map them back to ``[-1, 1]``.
        image_std: the DataModule's intensity standard deviation.
        num_bins: score bins of the validation histogram (threshold resolution ``1 / bins``).
        in_channels: the dataset's channels, checked against the networks in :meth:`setup`.
        normal_class: on an image-level set, its healthy class (``${dataset.normal_class}``):
            trains on those B-scans and scores B-scan detection (None: masks and fluid).
        image_classes: the image-level set's classes in ``class_index`` order.

    Raises:
        ValueError: on ``gan_epochs < 1``, ``n_critic < 1``, neither ``fluid_labels`` nor
            ``normal_class``, or a ``normal_class`` not in ``image_classes``.
    """

    predicts_scans = True
    trains_without_pixel_labels = True  # with normal_class (image-level sets)
    hparams_ignore = ("net", "generator_optimizer", "critic_optimizer", "encoder_optimizer")

    def __init__(
        self,
        net: FAnoGAN,
        generator_optimizer: Callable[..., torch.optim.Optimizer],
        critic_optimizer: Callable[..., torch.optim.Optimizer],
        encoder_optimizer: Callable[..., torch.optim.Optimizer],
        gan_epochs: int,
        n_critic: int = 5,
        lambda_gp: float = 10.0,
        patches_per_step: int = 64,
        fluid_labels: Sequence[int] = (),
        centre_labels: Sequence[int] | None = None,
        ignore_index: int = 255,
        image_mean: float = 0.0,
        image_std: float = 1.0,
        num_bins: int = 1000,
        in_channels: int | None = None,
        normal_class: str | None = None,
        image_classes: Sequence[str] | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=list(self.hparams_ignore))
        if int(gan_epochs) < 1 or int(n_critic) < 1:
            raise ValueError(
                f"model.gan_epochs={gan_epochs} and model.n_critic={n_critic} must be >= 1: the "
                "encoder is trained against a trained GAN."
            )
        self.normal_index: int | None = None
        if normal_class is not None:
            classes = [str(c) for c in image_classes or ()]
            if str(normal_class) not in classes:
                raise ValueError(
                    f"model.normal_class={normal_class!r} is not one of the dataset's "
                    f"image_classes {classes}; set dataset.normal_class to its healthy class."
                )
            self.normal_index, self.image_classes = classes.index(str(normal_class)), classes
            # No masks: B-scan detection through trainer.test (not the pixel evaluation).
            self.predicts_scans = False
        elif not fluid_labels:
            raise ValueError(
                "model.fluid_labels is empty and model.normal_class is null: f-AnoGAN trains on "
                "fluid-free patches and is evaluated against fluid (a dataset whose "
                "anatomy.fluid_labels is set), or on the normal class of an image-level set "
                "(dataset.normal_class)."
            )
        self.automatic_optimization = False
        self.net = net
        self.factories = {
            "generator": generator_optimizer,
            "critic": critic_optimizer,
            "encoder": encoder_optimizer,
        }
        self.gan_epochs, self.n_critic = int(gan_epochs), int(n_critic)
        self.lambda_gp, self.patches_per_step = float(lambda_gp), int(patches_per_step)
        self.fluid_labels = [int(v) for v in fluid_labels]
        self.centre_labels = None if not centre_labels else [int(v) for v in centre_labels]
        self.ignore_index = int(ignore_index)
        self.image_mean, self.image_std = float(image_mean), float(image_std)
        self.num_bins = int(num_bins)
        # Persistent: a resume knows its stage before configure_optimizers runs; the threshold
        # travels with the weights it was chosen for.
        self.register_buffer("in_encoder_stage", torch.tensor(False))
        self.register_buffer("critic_steps", torch.tensor(0))
        self.register_buffer("threshold", torch.tensor(0.5))
        self._val_hist: torch.Tensor | None = None
        self._val_scores: list[torch.Tensor] = []
        self._scan_classes: list[torch.Tensor] = []

    # ------------------------------------------------------------------ stages
    @property
    def stage(self) -> str:
        """``"gan"`` or ``"encoder"``."""
        return "encoder" if bool(self.in_encoder_stage) else "gan"

    def _apply_stage(self) -> None:
        frozen = self.stage == "encoder"
        for part in (self.net.generator, self.net.critic):
            part.requires_grad_(not frozen)
            if frozen:
                part.eval()

    def train(self, mode: bool = True) -> FAnoGANModule:
        """Sets the mode; in the encoder stage generator and critic stay in eval mode (the
        generator's BatchNorm uses its running statistics, as in the official code)."""
        super().train(mode)
        if self.stage == "encoder":
            self.net.generator.eval()
            self.net.critic.eval()
        return self

    def setup(self, stage: str) -> None:
        """Checks that the networks take the dataset's channels before any time is spent."""
        channels = self.hparams.get("in_channels")
        if channels is not None and int(channels) != self.net.in_channels:
            raise ValueError(
                f"model.net.in_channels={self.net.in_channels} but dataset.in_channels="
                f"{channels}; set model.net.in_channels=${{dataset.in_channels}}."
            )

    def on_fit_start(self) -> None:
        """Refuses early stopping that would end the run in the GAN stage (validation scores
        the encoder, which trains only afterwards)."""
        if self.stage == "gan":
            check_patience_outlasts(
                self.trainer, self.gan_epochs, "gan_epochs", "the GAN stage", "the encoder"
            )

    def on_train_epoch_start(self) -> None:
        if self.stage == "gan" and self.current_epoch >= self.gan_epochs:
            self.in_encoder_stage.fill_(True)
            self._apply_stage()
            log.info(
                "Epoch %d: encoder stage, generator and critic frozen, optimizer rebuilt.",
                self.current_epoch,
            )
            self.trainer.strategy.setup_optimizers(self.trainer)
        self.log("train/stage_encoder", float(self.stage == "encoder"), on_epoch=True)

    def configure_optimizers(self) -> Any:
        self._apply_stage()
        if self.stage == "encoder":
            return self.factories["encoder"](params=list(self.net.encoder.parameters()))
        return [
            self.factories["generator"](params=list(self.net.generator.parameters())),
            self.factories["critic"](params=list(self.net.critic.parameters())),
        ]

    # ------------------------------------------------------------------ data
    def to_unit_range(self, image: torch.Tensor) -> torch.Tensor:
        """Normalised images back to the networks' ``[-1, 1]`` (clamped: augmentation may
        push intensities outside)."""
        return ((image * self.image_std + self.image_mean) * 2 - 1).clamp(-1, 1)

    def healthy_patches(self, batch: Mapping[str, Any]) -> torch.Tensor | None:
        """Up to ``patches_per_step`` healthy patches ``[N, C, 64, 64]`` in ``[-1, 1]`` drawn
        from the batch (None when it has none)."""
        if self.normal_index is not None:
            healthy = healthy_windows(self._normal_scan_masks(batch), (), self.ignore_index)
        elif "mask" not in batch:
            raise ValueError(
                "f-AnoGAN picks healthy training patches by their masks, but this batch has "
                "none; train on a labelled dataset (unlabelled B-scans cannot be checked for "
                "fluid) or on an image-level set's normal class (dataset.normal_class)."
            )
        else:
            healthy = healthy_windows(
                batch["mask"], self.fluid_labels, self.ignore_index, self.centre_labels
            )
        where = healthy.nonzero()
        if where.shape[0] == 0:
            return None
        n = self.patches_per_step
        if where.shape[0] >= n:
            pick = torch.randperm(where.shape[0], device=where.device)[:n]
        else:
            pick = torch.randint(where.shape[0], (n,), device=where.device)
        image = self.to_unit_range(batch["image"])
        patches = [
            extract_patches(image[b], [int(y)], [int(x)]) for b, y, x in where[pick].tolist()
        ]
        return torch.cat(patches)

    def _normal_scan_masks(self, batch: Mapping[str, Any]) -> torch.Tensor:
        """``[B, H, W]``: 0 inside the true size of each normal-class B-scan, ``ignore_index``
        on padding and on every B-scan of another class (never drawn from)."""
        image = batch["image"]
        if "class_index" not in batch:
            raise ValueError(
                "model.normal_class is set but the batch has no class_index; use an "
                "image-level dataset (dataset=kermany, oct_c8 or octid)."
            )
        b, h, w = image.shape[0], *image.shape[-2:]
        masks = torch.full((b, h, w), self.ignore_index, dtype=torch.long, device=image.device)
        sizes = batch.get("orig_hw")
        sizes = sizes.tolist() if sizes is not None else [(h, w)] * b
        for i, (hi, wi) in enumerate(sizes):
            if int(batch["class_index"][i]) == self.normal_index:
                masks[i, :hi, :wi] = 0
        return masks

    # ------------------------------------------------------------------ training
    def training_step(self, batch: Mapping[str, Any], batch_idx: int) -> torch.Tensor | None:
        real = self.healthy_patches(batch)
        if real is None:
            log.warning("Batch %d holds no healthy 64 x 64 patch; step skipped.", batch_idx)
            return None
        n = real.shape[0]
        self.log("train/healthy_patches", float(n), on_step=False, on_epoch=True, batch_size=n)
        if self.stage == "encoder":
            return self._encoder_step(real)
        return self._gan_step(real)

    def _gan_step(self, real: torch.Tensor) -> torch.Tensor:
        opt_g, opt_d = self.optimizers()
        n = real.shape[0]
        with torch.no_grad():
            fake = self.net.generator(self.net.sample_z(n, real.device))
        losses = critic_loss(self.net.critic, real, fake, self.lambda_gp)
        opt_d.zero_grad()
        self.manual_backward(losses["loss"])
        opt_d.step()
        self.critic_steps.add_(1)
        self.log_dict(
            {f"train/critic/{k}": v.detach() for k, v in losses.items()},
            on_step=True,
            on_epoch=True,
            batch_size=n,
        )
        if int(self.critic_steps) % self.n_critic == 0:
            self.net.critic.requires_grad_(False)  # the generator's step leaves D untouched
            loss_g = generator_loss(
                self.net.critic, self.net.generator(self.net.sample_z(n, real.device))
            )
            opt_g.zero_grad()
            self.manual_backward(loss_g)
            opt_g.step()
            self.net.critic.requires_grad_(True)
            self.log("train/generator/loss", loss_g.detach(), on_epoch=True, batch_size=n)
        return losses["loss"].detach()

    def _encoder_step(self, real: torch.Tensor) -> torch.Tensor:
        opt_e = self.optimizers()
        terms = self.net.izif(real)
        loss = terms["image"].mean() + self.net.kappa * terms["feature"].mean()
        opt_e.zero_grad()
        self.manual_backward(loss)
        opt_e.step()
        self.log_dict(
            {
                "train/encoder/loss": loss.detach(),
                "train/encoder/image": terms["image"].mean().detach(),
                "train/encoder/feature": terms["feature"].mean().detach(),
            },
            on_step=True,
            on_epoch=True,
            batch_size=real.shape[0],
            prog_bar=False,
        )
        return loss.detach()

    # ------------------------------------------------------------------ anomaly maps
    def forward(self, image: torch.Tensor) -> SegOutput:
        """Normalised B-scans ``[B, C, H, W]`` (one size) -> :class:`SegOutput` with
        ``logits [B, 2, H, W] = (threshold, p_fluid)`` (their argmax is the thresholded fluid
        prediction) and ``aux`` ``p_fluid [B, H, W]`` and ``scan_score [B]``."""
        out = self.net(self.to_unit_range(image))
        prob = (out.aux["residual"] / 2).clamp(0, 1)
        logits = torch.stack([torch.full_like(prob, float(self.threshold)), prob], 1)
        return SegOutput(logits, aux={"p_fluid": prob, "scan_score": out.aux["scan_score"]})

    def anomaly_maps(self, batch: Mapping[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        """``(p_fluid [B, H, W], scan_score [B])``: ``r / 2`` of the stitched residual of each
        B-scan at its true size (zero where the batch is padded) and its anomaly score."""
        image = batch["image"]
        sizes = batch.get("orig_hw")
        sizes = sizes.tolist() if sizes is not None else [image.shape[-2:]] * image.shape[0]
        prob = image.new_zeros(image.shape[0], *image.shape[-2:])
        scores = image.new_zeros(image.shape[0])
        for i, (h, w) in enumerate(sizes):
            out = self(image[i : i + 1, :, :h, :w])
            prob[i, :h, :w] = out.aux["p_fluid"][0]
            scores[i] = out.aux["scan_score"][0]
        return prob, scores

    def validation_step(self, batch: Mapping[str, Any], batch_idx: int) -> None:
        prob, scores = self.anomaly_maps(batch)
        if self.normal_index is not None:
            self._val_scores.append(scores.detach())
            self._scan_classes.append(batch["class_index"].detach())
            return
        target = binarise(batch["mask"], self.fluid_labels, self.ignore_index)
        hist = _histogram(
            torch.stack([1 - prob, prob], 1), target, self.num_bins, self.ignore_index
        )[1]
        self._val_hist = hist if self._val_hist is None else self._val_hist + hist
        self._val_scores.append(scores.detach())

    def on_validation_epoch_start(self) -> None:
        self._val_hist, self._val_scores, self._scan_classes = None, [], []

    def on_validation_epoch_end(self) -> None:
        if self.normal_index is not None:
            self.log_dict(self._scan_detection("val", by_class=False))
            return
        if self._val_hist is None:
            return
        hist = self._val_hist
        threshold, dice = best_dice_threshold(hist)
        if not math.isnan(threshold) and not self.trainer.sanity_checking:
            self.threshold.fill_(threshold)
        self.log_dict(
            {
                "val/dice": dice,
                "val/auroc": float(auroc_from_histogram(hist[None])[0]),
                "val/ap": float(ap_from_histogram(hist[None])[0]),
                "val/threshold": float(self.threshold),
                "val/anomaly_score": float(torch.cat(self._val_scores).mean()),
            }
        )

    # ------------------------------------------------------------------ image-level sets
    def test_step(self, batch: Mapping[str, Any], batch_idx: int) -> None:
        """Image-level sets only (``predicts_scans`` is off there): B-scan scores and classes."""
        self._val_scores.append(self.anomaly_maps(batch)[1].detach())
        self._scan_classes.append(batch["class_index"].detach())

    def on_test_epoch_start(self) -> None:
        self._val_scores, self._scan_classes = [], []

    def on_test_epoch_end(self) -> None:
        self.log_dict(self._scan_detection("test", by_class=True))

    def _scan_detection(self, stage: str, by_class: bool) -> dict[str, float]:
        """B-scan AUROC and AP of the anomaly score against "not the normal class" (NaN
        without both kinds), the mean score, and per abnormal class against the normal one."""
        if not self._val_scores:
            return {}
        scores = torch.cat(self._val_scores).float().cpu()
        classes = torch.cat(self._scan_classes).cpu()
        normal = classes == self.normal_index
        out = {
            f"{stage}/scan_auroc": _binary_auroc(scores, ~normal),
            f"{stage}/scan_ap": _binary_ap(scores, ~normal),
            f"{stage}/anomaly_score": float(scores.mean()),
        }
        if by_class:
            for index, name in enumerate(self.image_classes):
                keep = normal | (classes == index)
                if index != self.normal_index and bool((classes == index).any()):
                    out[f"{stage}/scan_auroc/{name}"] = _binary_auroc(
                        scores[keep], ~normal[keep]
                    )
        return out

    # ------------------------------------------------------------------ evaluation
    def predict_step(self, batch: Mapping[str, Any], batch_idx: int) -> list[dict[str, Any]]:
        """Per B-scan: ``pred`` (fluid where ``p >= threshold``), ``probs [2, H, W]``,
        the binarised ``target``, ``scores [2]`` (``[NaN, anomaly score]``), at true size."""
        prob, scores = self.anomaly_maps(batch)
        threshold = float(self.threshold)
        results = []
        for i, (h, w) in enumerate(batch["orig_hw"].tolist()):
            p = prob[i, :h, :w].float().cpu()
            target = batch["mask"][i, :h, :w] if "mask" in batch else None
            results.append(
                {
                    "case_id": batch["case_id"][i],
                    "volume_id": batch["volume_id"][i],
                    "pred": (p >= threshold).long(),
                    "probs": torch.stack([1 - p, p]),
                    "target": None
                    if target is None
                    else binarise(target, self.fluid_labels, self.ignore_index).cpu(),
                    "scores": torch.tensor([math.nan, float(scores[i])]),
                    "spacing_um": batch["spacing_um"][i].tolist()
                    if "spacing_um" in batch
                    else None,
                }
            )
        return results

    def evaluation_suite(self, suite: Mapping[str, Any]) -> dict[str, Any]:
        """The metric suite settings for this module's predictions: the two-class label space
        ``[rest, fluid]`` (fluid volumes and areas from class 1), plus the ``probabilistic``
        (pixel AUROC, AP) and ``detection`` (B-scan AUROC) families."""
        out = dict(suite)
        families = list(out.get("families") or ["overlap"])
        out.update(
            num_classes=2,
            class_names=["rest", "fluid"],
            anatomy={"fluid_labels": [1]},
            families=families + [f for f in ("probabilistic", "detection") if f not in families],
        )
        return out
