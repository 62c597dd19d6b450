"""The model factory."""
