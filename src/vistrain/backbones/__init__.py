"""Pretrained backbones: a registry where each weight carries its own preprocessing."""

from vistrain.backbones.registry import Backbone, BackboneUnavailable, get_backbone, list_backbones

__all__ = ["Backbone", "BackboneUnavailable", "get_backbone", "list_backbones"]
