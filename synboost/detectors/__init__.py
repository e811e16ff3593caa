"""Detectors: a batch of RGB images in, one anomaly map per image out.

:mod:`~synboost.detectors.detector` turns a pipeline file into a detector, :mod:`~synboost.detectors.components`
builds, saves and loads each network kind, :mod:`~synboost.detectors.posthoc` and
:mod:`~synboost.detectors.synboost` are the detectors, :mod:`~synboost.detectors.perceptual` the perceptual
difference.
"""
