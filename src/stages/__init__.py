"""The pipeline stages, one module each: `python -m src.stages.<name> --config params.yaml`.

Under `make pipeline` a preloaded runner (`src.pipeline.preload`) has pandas,
scikit-learn and the stages imported already: a stage command started by DVC
hands itself over to it here, before importing anything heavy, and exits with
the stage's exit code. Without the runner it goes on and runs the stage itself.
"""

from src.forkclient import run_in_runner_if_any

run_in_runner_if_any()
