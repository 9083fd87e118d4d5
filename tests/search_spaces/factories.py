"""Candidate dicts of every family (JSON as a client sends it), shared by the space tests."""

from __future__ import annotations

from typing import Any


def cnn(**overrides: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "schema_version": 3,
        "space": "cnn_small",
        "family": "cnn",
        "input_shape": [1, 8, 8],
        "num_classes": 10,
        "stages": [
            {"width": 16, "stride": 2, "wbits": 8, "abits": 8, "prune": 0.25, "rank": 0.5},
            {"width": 32, "stride": 2, "wbits": 4, "prune": 0.0, "rank": 1.0},
        ],
        "head_wbits": 8,
    }
    data.update(overrides)
    return data


def mlp(**overrides: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "space": "mlp_small",
        "family": "mlp",
        "input_shape": [64],
        "num_classes": 10,
        "stages": [{"width": 128, "wbits": 8}, {"width": 64, "wbits": 32}],
    }
    data.update(overrides)
    return data


def mbv2(**overrides: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "space": "mbv2",
        "family": "mbv2",
        "input_shape": [3, 32, 32],
        "num_classes": 10,
        "stem_width": 16,
        "stages": [
            {"depth": 2, "width": 24, "expand": 4, "stride": 2, "wbits": 8, "abits": 8},
            {"depth": 3, "width": 32, "expand": 6, "stride": 2, "prune": 0.25, "rank": 0.5},
        ],
    }
    data.update(overrides)
    return data


def resnet(**overrides: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "space": "resnet",
        "family": "resnet",
        "input_shape": [3, 32, 32],
        "num_classes": 10,
        "stem_width": 16,
        "stages": [
            {"depth": 2, "width": 16, "kernel": 3},
            {
                "depth": 2,
                "width": 32,
                "stride": 2,
                "blocks": [{"wbits": 4, "prune": 0.5}, {"wbits": 8, "abits": 8, "rank": 0.5}],
            },
        ],
        "head_wbits": 8,
        "head_abits": 8,
    }
    data.update(overrides)
    return data


def v1_cnn(**overrides: Any) -> dict[str, Any]:
    """A schema-version-1 candidate as stored by earlier releases (``layers``, one ``kernel``)."""
    data: dict[str, Any] = {
        "schema_version": 1,
        "space": "cnn_small",
        "family": "cnn",
        "input_shape": [1, 8, 8],
        "num_classes": 10,
        "kernel": 5,
        "layers": [
            {"width": 16, "wbits": 8, "prune": 0.25, "rank": 0.5},
            {"width": 32, "wbits": 4, "prune": 0.0, "rank": 1.0},
            {"width": 48},
        ],
        "head_wbits": 8,
    }
    data.update(overrides)
    return data


def with_stage0(data: dict[str, Any] | None = None, **changes: Any) -> dict[str, Any]:
    data = data or cnn()
    data["stages"] = [{**data["stages"][0], **changes}, *data["stages"][1:]]
    return data
