"""Configuration edges, file I/O, logging and MLflow tracking."""
