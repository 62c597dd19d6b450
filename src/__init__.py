"""ML research template: a DVC pipeline tracked in MLflow."""
