"""Data versions: make tag, verify, checkout, history, gc, dvc-setup; the one way to run dvc and git."""
