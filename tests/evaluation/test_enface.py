"""En-face thickness maps, the fovea and ETDRS sector means."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from octseg.evaluation.enface import (
    ETDRS_SECTORS,
    etdrs_sector_means,
    find_fovea,
    render_thickness_map,
    scan_profiles,
    superior_at_last_bscan,
)

# A 6 x 6 mm macular cube sampled like a Spectralis 49-line volume (coarse, to stay small).
LATERAL_UM, BSCAN_UM = 20.0, 60.0
SHAPE = (121, 361)  # B-scans x A-scans: 7.2 x 7.2 mm
FOVEA = (60.0, 180.0)


def test_constant_map_gives_the_constant_in_every_sector() -> None:
    sectors = etdrs_sector_means(np.full(SHAPE, 271.5), FOVEA, LATERAL_UM, BSCAN_UM)
    assert list(sectors) == list(ETDRS_SECTORS)
    for name, (mean, count) in sectors.items():
        assert mean == pytest.approx(271.5), name
        assert count > 0, name
    # The central 1 mm disc holds about pi * 0.5^2 mm^2 of 0.02 x 0.06 mm pixels.
    assert sectors["central"][1] == pytest.approx(np.pi * 0.25 / (0.02 * 0.06), rel=0.05)


def test_sectors_follow_laterality_and_bscan_order() -> None:
    tmap = np.zeros(SHAPE)
    tmap[:, 181:] = 1.0  # higher A-scan index: nasal in a right eye
    tmap[61:, :] += 10.0  # later B-scans: superior when the last B-scan is superior
    od = etdrs_sector_means(tmap, FOVEA, LATERAL_UM, BSCAN_UM, "OD", superior_last=True)
    os_ = etdrs_sector_means(tmap, FOVEA, LATERAL_UM, BSCAN_UM, "OS", superior_last=True)
    flipped = etdrs_sector_means(tmap, FOVEA, LATERAL_UM, BSCAN_UM, "OD", superior_last=False)
    assert od["outer_nasal"][0] == pytest.approx(1.0 + 10.0 * 0.5, abs=0.2)
    assert od["outer_temporal"][0] == pytest.approx(0.0 + 10.0 * 0.5, abs=0.2)
    assert os_["outer_nasal"][0] == pytest.approx(od["outer_temporal"][0])
    assert od["inner_superior"][0] > 10.0 > od["inner_inferior"][0]
    assert flipped["inner_superior"][0] == pytest.approx(od["inner_inferior"][0])


def test_sectors_outside_the_scan_are_empty() -> None:
    narrow = etdrs_sector_means(np.ones((11, 361)), (5.0, 180.0), LATERAL_UM, BSCAN_UM)
    assert np.isnan(narrow["outer_superior"][0]) and narrow["outer_superior"][1] == 0
    assert narrow["outer_nasal"][0] == 1.0


def test_fovea_is_the_thinnest_central_point() -> None:
    yy, xx = np.meshgrid(np.arange(SHAPE[0]) * BSCAN_UM, np.arange(SHAPE[1]) * LATERAL_UM,
                         indexing="ij")  # fmt: skip
    pit = (55 * BSCAN_UM, 190 * LATERAL_UM)
    total = 320.0 - 90.0 * np.exp(-((yy - pit[0]) ** 2 + (xx - pit[1]) ** 2) / (2 * 400.0**2))
    total[:, :40] = 100.0  # thin periphery (e.g. the optic disc) must not win
    total[70, 200] = np.nan
    row, col = find_fovea(total, LATERAL_UM, BSCAN_UM)
    assert (row, col) == (55.0, 190.0)


def test_bscan_order_from_vendor_positions() -> None:
    heidelberg = [[[1.5, 6.807], [7.5, 6.807]], [[1.5, 6.524], [7.5, 6.524]]]
    assert superior_at_last_bscan(heidelberg) is True
    assert superior_at_last_bscan(heidelberg[::-1]) is False
    assert superior_at_last_bscan([]) is None


def test_thickness_map_of_a_synthetic_volume_within_one_micrometre() -> None:
    """Three layers of known thickness (varying across the volume) under a wavy surface."""
    axial = 3.87
    n, h, w = 9, 120, 64
    ordered, layers = [0, 1, 2, 3, 4], [1, 2, 3]
    truth = np.zeros((4, n, w))
    rows = []
    for b in range(n):
        labels = np.full((h, w), 4, np.int64)
        for j in range(w):
            top = 20 + int(8 * np.sin(j / 7.0 + b))
            widths = [10 + b % 3, 25 - (j % 5), 7 + (j * b) % 4]
            labels[:top, j] = 0
            edge = top
            for lab, width in zip(layers, widths, strict=True):
                labels[edge : edge + width, j] = lab
                edge += width
            truth[:3, b, j] = np.array(widths) * axial
        truth[3, b] = truth[:3, b].sum(axis=0)
        depth, thickness = scan_profiles(labels, ordered, layers, axial)
        rows.append(thickness)
        tops = np.argmax(labels != 0, axis=0)
        np.testing.assert_allclose(depth[0], tops * axial)  # ILM depth in um
    maps = np.stack(rows, axis=1)
    assert maps.shape == (4, n, w)
    np.testing.assert_allclose(maps, truth, atol=1.0)


def test_rendered_map_is_a_png(tmp_path) -> None:
    png = render_thickness_map(np.full((5, 30), 80.0), "RNFL", 11.3, 120.0, fovea=(2.0, 15.0))
    path = tmp_path / "map.png"
    path.write_bytes(png)
    with Image.open(path) as img:
        assert img.format == "PNG" and img.size[0] > 100
