"""Target tracking (:mod:`fusion.target_tracking`) and the ``fusion 4d`` command that uses it by default."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import SimpleITK as sitk
from click.testing import CliRunner

from fusion.ct4d import METHODS, analyse_4dct
from fusion.errors import TrackingError
from fusion.target_tracking import TrackingSettings, compute_masked_ncc, track_target
from oncopacs.cli import main
from oncopacs.phantom.ct4d import CT4D_FAMILY, HU_LUNG, Ct4dSpec, build_ct4d_phantom
from oncopacs.phantom.writer import write_datasets


def brute_force_ncc(template, mask, image, valid, min_overlap):
    out = tuple(n - m + 1 for n, m in zip(image.shape, template.shape, strict=True))
    result = np.full(out, -np.inf)
    for s in np.ndindex(*out):
        window = tuple(slice(a, a + m) for a, m in zip(s, template.shape, strict=True))
        both = (mask > 0) & (valid[window] > 0)
        if both.sum() < min_overlap * (mask > 0).sum():
            continue
        a, b = template[both] - template[both].mean(), image[window][both] - image[window][both].mean()
        if (a * a).sum() * (b * b).sum() > 1e-9:
            result[s] = (a * b).sum() / np.sqrt((a * a).sum() * (b * b).sum())
    return result


def test_masked_ncc_matches_the_definition():
    rng = np.random.default_rng(7)
    template, image = rng.normal(size=(4, 5, 3)), rng.normal(size=(9, 8, 7))
    mask = (rng.random(template.shape) > 0.3).astype(float)
    valid = np.ones(image.shape)
    valid[:2] = 0.0  # a slab outside the image
    image[3:7, 2:7, 1:4] = 2.0 * template + 5.0  # the template, brighter and offset, at (3, 2, 1)
    ncc = compute_masked_ncc(template, mask, image * valid, valid, min_overlap=0.5)
    np.testing.assert_allclose(ncc, brute_force_ncc(template, mask, image, valid, 0.5), atol=1e-9)
    assert np.unravel_index(np.argmax(ncc), ncc.shape) == (3, 2, 1) and ncc.max() == pytest.approx(1.0)
    with pytest.raises(ValueError, match="smaller"):
        compute_masked_ncc(image, valid, template, mask)


def blob_image(shift_mm, direction, size=(40, 36, 24), spacing=(2.0, 2.5, 3.0)) -> sitk.Image:
    """A 10 mm ball (100 HU) ``shift_mm`` from the grid's centre in -800 HU, a static slab 22 mm to its side."""
    image = sitk.Image(list(size), sitk.sitkFloat32)
    image.SetSpacing(spacing)
    image.SetDirection(direction)
    image.SetOrigin((5.0, -20.0, 40.0))
    index = np.stack(np.meshgrid(*(np.arange(n) for n in size), indexing="ij"), axis=-1).reshape(-1, 3)
    points = np.array([image.TransformIndexToPhysicalPoint([int(v) for v in i]) for i in index])
    centre = np.array(image.TransformContinuousIndexToPhysicalPoint([(n - 1) / 2 for n in size]))
    values = np.where(np.linalg.norm(points - centre - np.array(shift_mm), axis=1) <= 10.0, 100.0, -800.0)
    values[np.abs(points[:, 0] - centre[0] - 22.0) <= 4.0] = 700.0  # a rib-like slab beside the ball
    array = values.reshape(size).transpose(2, 1, 0).astype(np.float32)
    result = sitk.GetImageFromArray(array)
    result.CopyInformation(image)
    return result


def ball(image: sitk.Image) -> sitk.Image:
    return (image > 0) & (image < 500)


@pytest.mark.parametrize("direction", [(1, 0, 0, 0, 1, 0, 0, 0, 1), (0, 1, 0, -1, 0, 0, 0, 0, -1)])
def test_tracking_finds_the_physical_shift_on_any_grid_orientation(direction):
    shifts = [np.zeros(3), np.array([3.1, -4.4, 7.6]), np.array([-2.3, 1.2, 13.9])]
    images = [blob_image(tuple(s), direction) for s in shifts]
    matches = track_target(images, 0, ball(images[0]))
    for match, shift in zip(matches, shifts, strict=True):
        np.testing.assert_allclose(match.shift_mm, shift, atol=0.5)
        assert match.ncc > 0.8  # a ball without partial volume, moved by a fraction of a voxel
    # followed from a phase in the middle too
    assert track_target(images, 1, ball(images[1]))[0].shift_mm == pytest.approx(tuple(-shifts[1]), abs=0.5)


def test_tracking_refuses_an_empty_target_and_a_phase_with_nothing_to_compare():
    image = blob_image((0.0, 0.0, 0.0), (1, 0, 0, 0, 1, 0, 0, 0, 1))
    with pytest.raises(TrackingError, match="empty"):
        track_target([image, image], 0, image > 1000)
    assert track_target([image, image], 0, ball(image))[1].shift_mm == pytest.approx((0.0, 0.0, 0.0), abs=0.05)
    flat = sitk.Image(image.GetSize(), sitk.sitkFloat32)
    flat.CopyInformation(image)
    with pytest.raises(TrackingError, match="phase 2 of 2"):
        track_target([image, flat], 0, ball(image), TrackingSettings(search_mm=10.0))
    with pytest.raises(ValueError, match="reference_index"):
        track_target([image], 1, ball(image))


def test_a_phase_without_the_tumour_is_reported_as_a_weak_match(tmp_path):
    spec = Ct4dSpec(phases=4, shape=(16, 40, 40), spacing_mm=(2.5, 2.5, 2.5), supersampling=1, noise_sd_hu=20.0)
    phantom = build_ct4d_phantom(spec)
    hidden = build_ct4d_phantom(replace(spec, tumour_hu=HU_LUNG, noise_seed=1))
    for ds, empty in zip(phantom.phases[2], hidden.phases[2], strict=True):
        ds.PixelData = empty.PixelData
    analysis = analyse_4dct(phantom.all_datasets())
    assert analysis.weak_match_percents == (50.0,) and analysis.to_dict()["weak_match_phase_percent"] == [50.0]
    write_datasets(phantom.all_datasets(), tmp_path / "in")
    result = CliRunner().invoke(main, ["fusion", "4d", str(tmp_path / "in"), "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    assert "weak GTV match on phase(s) 50%" in result.output


def test_an_unknown_method_is_refused():
    with pytest.raises(ValueError, match="track"):
        analyse_4dct([], method="optical-flow")
    assert METHODS == ("track", "rigid", "deformable")


def test_the_4d_command_tracks_the_issue_case_and_keeps_rigid_selectable(tmp_path):
    """As a user runs it: the phantom written to a folder, ``oncopacs fusion 4d`` on it, JSON read back."""
    spec = CT4D_FAMILY["issue_case"]
    write_datasets(build_ct4d_phantom(spec).all_datasets(), tmp_path / "in")
    result = CliRunner().invoke(main, ["fusion", "4d", str(tmp_path / "in"), "--out", str(tmp_path / "out"),
                                       "--json"])
    assert result.exit_code == 0, result.output
    document = json.loads(result.output)
    assert document["method"] == "track" and len(document["match_ncc"]) == 10
    assert document["weak_match_phase_percent"] == []
    for axis, truth in zip(("LR", "AP", "SI"), spec.compute_amplitude_mm(), strict=True):
        assert document["amplitude_mm"][axis] == pytest.approx(truth, abs=1.0), axis
    assert document["itv_cc"] == pytest.approx(spec.compute_itv_cc(), rel=0.05)
    small = Ct4dSpec(phases=4, shape=(24, 48, 48), amplitude_mm=(0.0, 3.0, 10.0), supersampling=2)
    write_datasets(build_ct4d_phantom(small).all_datasets(), tmp_path / "small")
    result = CliRunner().invoke(main, ["fusion", "4d", str(tmp_path / "small"), "--out", str(tmp_path / "o2"),
                                       "--method", "rigid", "--json"])
    assert result.exit_code == 0, result.output
    document = json.loads(result.output)
    assert document["method"] == "rigid" and "match_ncc" not in document
    assert document["amplitude_mm"]["SI"] == pytest.approx(10.0, abs=1.0)
