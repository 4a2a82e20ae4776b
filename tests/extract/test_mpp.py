"""Level-0 mpp resolution: the documented source order, units, plausibility."""

import math

import pytest

from slidemil.core.errors import SlideError
from slidemil.extract.mpp import resolve_mpp


def test_override_wins_over_file_metadata():
    result = resolve_mpp({"openslide.mpp-x": "0.25", "openslide.mpp-y": "0.25"}, override=0.5)
    assert (result.mpp, result.source) == (0.5, "override")
    assert result.note == ("the cohort mpp 0.5 µm/px overrides the file's 0.25 µm/px (openslide), 2.0x apart: "
                           "check the `mpp` column")  # said in the slide's manifest reason
    assert resolve_mpp({"openslide.mpp-x": "0.25", "openslide.mpp-y": "0.25"}, override=0.26).note == ""
    assert resolve_mpp({}, override=0.5).note == ""  # nothing in the file to disagree with


def test_nan_override_falls_back_to_openslide():
    result = resolve_mpp({"openslide.mpp-x": "0.2282", "openslide.mpp-y": "0.2282"}, override=math.nan)
    assert result.source == "openslide"
    assert result.mpp == pytest.approx(0.2282)


def test_implausible_override_is_refused_with_the_column_named():
    with pytest.raises(SlideError, match="mpp` column"):
        resolve_mpp({}, override=250.0)


@pytest.mark.parametrize(
    ("unit", "resolution", "expected"),
    [("centimeter", 20040.08, 0.499), ("inch", 50901.8, 0.499), ("inch", 101600.0, 0.25)],
)
def test_tiff_resolution_with_its_unit(unit, resolution, expected):
    props = {"tiff.XResolution": str(resolution), "tiff.YResolution": str(resolution), "tiff.ResolutionUnit": unit}
    result = resolve_mpp(props)
    assert result.source == "tiff"
    assert result.mpp == pytest.approx(expected, rel=1e-3)


def test_72_dpi_default_is_implausible_and_the_message_says_add_mpp():
    props = {"tiff.XResolution": "72", "tiff.YResolution": "72", "tiff.ResolutionUnit": "inch"}
    with pytest.raises(SlideError, match=r"352\.778 µm/px is outside.*add an `mpp` column"):
        resolve_mpp(props)


def test_implausible_source_is_skipped_for_the_next_plausible_one():
    props = {"openslide.mpp-x": "0.0001", "openslide.mpp-y": "0.0001", "aperio.MPP": "0.2520"}
    assert resolve_mpp(props) == resolve_mpp({"aperio.MPP": "0.2520"})
    assert resolve_mpp(props).source == "aperio"


def test_unit_none_has_no_physical_size():
    with pytest.raises(SlideError, match="ResolutionUnit 'none'"):
        resolve_mpp({"tiff.XResolution": "1", "tiff.ResolutionUnit": "none"})


def test_aperio_description_with_a_non_ascii_byte_is_parsed():
    description = "Aperio Image Library v12 \r\n2220x2967 JPEG/RGB Q=70|AppMag = 20|MPP = 0.4990|Filename = caf\ufffd"
    result = resolve_mpp({"tiff.ImageDescription": description})
    assert (result.source, result.mpp) == ("aperio", pytest.approx(0.499))


def test_dicom_pixel_spacing_in_mm():
    key = "dicom.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0].PixelSpacing[{}]"
    result = resolve_mpp({key.format(0): "0.000243", key.format(1): "0.000243"})
    assert (result.source, result.mpp) == ("dicom", pytest.approx(0.243))


def test_ome_physical_size_in_nanometres():
    result = resolve_mpp({"ome.PhysicalSizeX": "227.1", "ome.PhysicalSizeXUnit": "nm",
                          "ome.PhysicalSizeY": "227.1", "ome.PhysicalSizeYUnit": "nm"})
    assert (result.source, result.mpp) == ("ome", pytest.approx(0.2271))


def test_non_square_pixels_are_refused():
    with pytest.raises(SlideError, match="non-square"):
        resolve_mpp({"openslide.mpp-x": "0.25", "openslide.mpp-y": "0.5"})


def test_no_metadata_at_all():
    with pytest.raises(SlideError, match="no resolution metadata.*add an `mpp` column"):
        resolve_mpp({})
