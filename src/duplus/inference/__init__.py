"""Prompted inference: sliding-window prediction, the Predictor API, post-processing."""
