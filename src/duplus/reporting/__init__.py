"""Reporting: figures (overlays, Kaplan-Meier curves) and Markdown tables for run folders."""
