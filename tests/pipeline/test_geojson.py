"""GeoJSON for QuPath: closed patch squares inside the slide, detections with measurements and classes."""

import json

import numpy as np

from slidemil.pipeline.geojson import patch_collection, tissue_collection


def validate_qupath(collection: dict, width: float, height: float, object_type: str) -> None:
    """The checks QuPath's GeoJSON import relies on (and RFC 7946 asks for polygons)."""
    assert collection["type"] == "FeatureCollection"
    ids = set()
    for feature in collection["features"]:
        assert feature["type"] == "Feature" and feature["id"] not in ids
        ids.add(feature["id"])
        geometry = feature["geometry"]
        assert geometry["type"] == "Polygon"
        ring = np.asarray(geometry["coordinates"][0], dtype=float)
        assert ring.shape[0] >= 4 and ring.shape[1] == 2
        assert (ring[0] == ring[-1]).all()  # closed
        assert (ring[:, 0] >= 0).all() and (ring[:, 0] <= width).all()
        assert (ring[:, 1] >= 0).all() and (ring[:, 1] <= height).all()
        properties = feature["properties"]
        assert properties["objectType"] == object_type
        if "classification" in properties:
            assert isinstance(properties["classification"]["name"], str)
            assert len(properties["classification"]["color"]) == 3
        for value in properties.get("measurements", {}).values():
            assert value is None or isinstance(value, float)


def test_patch_squares_are_qupath_detections():
    coords = np.array([[0, 0], [512, 0], [1024, 512], [1900, 1900]])
    collection = patch_collection(coords, 512, {"attention percentile": [0.0, 1 / 3, 2 / 3, 1.0],
                                                "score tumor": [0.1, 0.2, 0.3, np.nan]},
                                  dimensions=(2000, 2100), classification=["benign", "tumor", "tumor", "benign"],
                                  class_names=["benign", "tumor"])
    collection = json.loads(json.dumps(collection))  # what is written is valid JSON
    validate_qupath(collection, 2000, 2100, "detection")
    features = collection["features"]
    assert len(features) == 4
    assert features[1]["geometry"]["coordinates"][0] == [[512, 0], [1024, 0], [1024, 512], [512, 512], [512, 0]]
    assert features[3]["geometry"]["coordinates"][0][2] == [2000, 2100]  # clipped to the slide
    assert features[2]["properties"]["measurements"] == {"attention percentile": 0.666667, "score tumor": 0.3}
    assert features[3]["properties"]["measurements"]["score tumor"] is None  # NaN is not JSON
    assert features[1]["properties"]["classification"] == {"name": "tumor", "color": [255, 127, 14]}
    assert features[0]["properties"]["classification"]["color"] == [31, 119, 180]


def test_tissue_outline_annotations_are_closed():
    square = np.array([[10, 10], [100, 10], [100, 90], [10, 90]])
    collection = tissue_collection([square, np.array([[1, 1], [2, 2]])])  # a 2-point outline is no polygon
    validate_qupath(collection, 200, 200, "annotation")
    assert len(collection["features"]) == 1
    assert collection["features"][0]["geometry"]["coordinates"][0][-1] == [10, 10]
