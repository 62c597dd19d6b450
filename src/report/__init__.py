"""Plots of the pipeline's results."""
