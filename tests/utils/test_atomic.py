"""Strict JSON: every file kangae writes parses in a browser's JSON.parse."""

import json
import math

from kangae.utils.atomic import finite_json, write_json


def test_nan_and_infinity_are_written_as_null(tmp_path):
    doc = {"a": float("nan"), "b": [1.5, float("inf"), (-math.inf, 2)], "c": {"d": "NaN", "e": 3}}
    assert finite_json(doc) == {"a": None, "b": [1.5, None, [None, 2]], "c": {"d": "NaN", "e": 3}}
    write_json(tmp_path / "x.json", doc)

    def refuse(constant):
        raise AssertionError(constant)

    assert json.loads((tmp_path / "x.json").read_text(), parse_constant=refuse)["b"] == [1.5, None, [None, 2]]
