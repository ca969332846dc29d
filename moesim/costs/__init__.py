"""Per-op costs on a device: the CostModel protocol, datasheet devices and the roofline model.

Calibrated profiles live in ``moesim.costs.calibrated`` / ``moesim.costs.profile`` (imported
from there directly, so this package works before a profile exists).
"""
from moesim.costs.base import LINK_KINDS, CostModel
from moesim.costs.devices import DEVICES, DeviceSpec, get_device
from moesim.costs.roofline import RooflineCostModel, RooflineEfficiency, RooflineTerms, make_cost_model

__all__ = [
    "DEVICES",
    "LINK_KINDS",
    "CostModel",
    "DeviceSpec",
    "RooflineCostModel",
    "RooflineEfficiency",
    "RooflineTerms",
    "get_device",
    "make_cost_model",
]
