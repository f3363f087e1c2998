"""Metrics: segmentation overlap/surface metrics and survival metrics (C-index, log-rank)."""
