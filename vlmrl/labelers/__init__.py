"""Labelers: models or teachers that answer preference or annotation queries."""

from vlmrl.labelers.base import Labeler
from vlmrl.labelers.cache import LabelCache

__all__ = ["LabelCache", "Labeler"]
