"""After training: the model registry, serving, batch scoring, drift and retraining."""
