"""synboost: pixel-wise anomaly segmentation of driving scenes (SynBoost, PEBAL and the uncertainty baselines)."""
__version__ = "0.1.0"
