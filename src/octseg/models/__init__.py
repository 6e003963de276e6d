"""OCTSeg networks, one file per method; a config's ``_target_`` is the only registry.

* :mod:`octseg.models.unet` — U-Net baseline of the Y-Net code (``model=unet``).
* :mod:`octseg.models.relaynet` — ReLayNet (``model=relaynet``).
* :mod:`octseg.models.ynet` — Y-Net with FFC / without (``model=ynet``, ``model=ynet_noffc``).
* :mod:`octseg.models.watnet` — WATNet, U-Net with wavelet channel attention (``model=watnet``).
* :mod:`octseg.models.lightreseg` — LightReSeg (``model=lightreseg``).
* :mod:`octseg.models.library` — MONAI and segmentation_models_pytorch baselines.
* :mod:`octseg.models.nnunet_style` — nnU-Net-style DynUNet (``model=nnunet_style``).
* :mod:`octseg.models.mgunet` — two-stage MGU-Net with GloRe graph reasoning (``model=mgunet``).
* :mod:`octseg.models.masood` — Masood 2024 hybrid CNN + texture features, a reconstruction
  (``model=masood``).
* :mod:`octseg.models.fouriernet` — FourierNet, FD-map cascade (``model=fouriernet``).
* :mod:`octseg.models.m2snet` — M2SNet / MSNet, Res2Net-50 multi-scale subtraction network
  (``model=m2snet``).
* :mod:`octseg.models.blocks` — shared building blocks (conv, FFC, wavelet, transformer,
  graph reasoning, texture, plain U-Net).
* :mod:`octseg.models.base`, :mod:`octseg.models.wrappers` — the output and input contracts.

Submodules are imported on use (nothing registers itself as an import side effect).
"""
