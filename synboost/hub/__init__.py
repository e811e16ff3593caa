"""Checkpoints: safe loading and self-describing saving (``checkpoint``), ImageNet backbone files (``pretrained``)."""
