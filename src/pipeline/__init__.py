"""`make pipeline` and `make sweep`: the parent run, `dvc repro` under it, and grids of DVC experiments."""
