"""The pipeline stages, one module each: `python -m src.stages.<name> --config params.yaml`."""
