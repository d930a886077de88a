"""Pretrained backbones: a registry where each weight carries its own preprocessing."""

from vistrain.backbones.registry import NAMING_HELP, Backbone, BackboneUnavailable, get_backbone, list_backbones

__all__ = ["NAMING_HELP", "Backbone", "BackboneUnavailable", "get_backbone", "list_backbones"]
