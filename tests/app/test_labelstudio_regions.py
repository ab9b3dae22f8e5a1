"""Label Studio regions as masks and points (app/labelstudio/regions.py) and labeling configs
(app/labelstudio/config.py), without the service."""

from __future__ import annotations

import pytest

from app.labelstudio.config import UnsupportedLabelConfig, parse_label_config
from app.labelstudio.regions import read_regions

SIZE = {"original_width": 100, "original_height": 50}


def box(rotation: float) -> dict:
    return {"type": "rectanglelabels", **SIZE,
            "value": {"x": 50, "y": 20, "width": 20, "height": 40, "rotation": rotation, "rectanglelabels": ["b"]}}


def test_a_box_rotates_about_its_top_left_corner_clockwise() -> None:
    upright = read_regions([box(0)], 10_000).masks["b"]  # x 50..70, y 10..30
    assert upright[10:30, 50:70].all() and upright.sum() == pytest.approx(20 * 20, abs=60)
    turned = read_regions([box(90)], 10_000).masks["b"]  # 90° clockwise (y down): x 30..50, y 10..30
    assert turned[11:29, 31:49].all() and not turned[:, 52:].any()


def test_regions_of_one_label_are_united_and_keypoints_kept_in_pixels() -> None:
    polygon = {"type": "polygonlabels", **SIZE,
               "value": {"points": [[0, 0], [10, 0], [10, 20]], "polygonlabels": ["b"]}}
    point = {"type": "keypointlabels", **SIZE, "value": {"x": 50, "y": 100, "keypointlabels": ["p"]}}
    other = {"type": "choices", "value": {"choices": ["x"]}}
    regions = read_regions([box(0), polygon, point, other], 10_000)
    assert list(regions.masks) == ["b"] and regions.masks["b"][0, 5] and regions.masks["b"][15, 60]
    assert regions.points == [(50.0, 49.0, "p")]  # y 100 % clamped to the last row
    assert read_regions("not a list", 10_000).masks == read_regions([], 10).masks == {}


def test_a_config_names_its_image_and_the_labels_to_predict() -> None:
    config = parse_label_config(
        '<View><Image name="img" value="$photo"/>'
        '<PolygonLabels name="poly" toName="img"><Label value="cat"/><Label value="dog"/></PolygonLabels>'
        '<BrushLabels name="brush" toName="img"><Label value="cat"/></BrushLabels>'
        '<BrushLabels name="elsewhere" toName="other"><Label value="fish"/></BrushLabels></View>')
    assert (config.image_name, config.image_key) == ("img", "photo")
    assert [(control.name, label) for control, label in config.mask_labels] == [("brush", "cat"), ("poly", "dog")]
    assert config.keypoints is None


@pytest.mark.parametrize("text", ['<View><Image name="i" value="photo"/><BrushLabels name="b" toName="i">'
                                  '<Label value="x"/></BrushLabels></View>',
                                  '<!DOCTYPE v [<!ENTITY a "aaaa"><!ENTITY b "&a;&a;&a;">]><View>&b;</View>'])
def test_configs_without_a_usable_image_are_refused(text: str) -> None:
    with pytest.raises(UnsupportedLabelConfig):
        parse_label_config(text)
