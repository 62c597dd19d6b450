"""`python -m src.pipeline`: what `make pipeline` runs (see `src.pipeline.run`)."""

from src.pipeline.run import main

if __name__ == "__main__":
    main()
