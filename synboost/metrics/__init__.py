"""Evaluation metrics (numpy only): pooled pixel AP / AUROC / FPR95, SMIYC component metrics, mIoU."""
from synboost.metrics.components import PRESETS, TAUS, ComponentMetrics, ComponentResult, component_scores
from synboost.metrics.pixel import (
    FPR_RULES,
    Curves,
    FprRule,
    PixelCurve,
    PixelMetrics,
    pixel_curve,
    pixel_curve_two_pass,
    pixel_metrics,
    pixel_metrics_two_pass,
)
from synboost.metrics.segmentation import ConfusionMatrix, SegmentationResult
from synboost.metrics.streaming import BoundedPixelMetrics, StreamingPixelMetrics

__all__ = [
    "FPR_RULES",
    "PRESETS",
    "TAUS",
    "BoundedPixelMetrics",
    "ComponentMetrics",
    "ComponentResult",
    "ConfusionMatrix",
    "Curves",
    "FprRule",
    "PixelCurve",
    "PixelMetrics",
    "SegmentationResult",
    "StreamingPixelMetrics",
    "component_scores",
    "pixel_curve",
    "pixel_curve_two_pass",
    "pixel_metrics",
    "pixel_metrics_two_pass",
]
