"""dvc.yaml, params.yaml and the code agree on paths and keys."""

from dataclasses import asdict

import yaml

from src.config import load_config
from src.paths import COMMAND_OUTPUTS, PATHS, params_under, stage_outputs
from tests.conftest import PROJECT_ROOT


def stages() -> dict:
    return yaml.safe_load((PROJECT_ROOT / "dvc.yaml").read_text())["stages"]


def test_every_params_key_in_dvc_yaml_names_a_key_or_a_section_of_the_config():
    flat = load_config(PROJECT_ROOT / "params.yaml").flat()
    for name, stage in stages().items():
        for key in stage["params"]:
            assert params_under(flat, [key]), f"{name}: {key}"


def test_dvc_yaml_outputs_are_the_paths_the_stages_write():
    declared = {path for stage in stages().values() for path in stage_outputs(stage)}
    inputs = ("stage_metrics_dir", "batches")  # a folder of metrics files; labelled batches that make retrain adds
    expected = {str(path) for name, path in asdict(PATHS).items() if name not in (*inputs, *COMMAND_OUTPUTS)}
    expected |= {str(PATHS.stage_metrics(stage)) for stage in stages()}
    assert declared == expected


def test_each_stage_runs_its_own_module_and_depends_on_it():
    for name, stage in stages().items():
        assert stage["cmd"] == f"python -m src.stages.{name} --config params.yaml"
        assert f"src/stages/{name}.py" in stage["deps"]


def test_data_split_depends_on_the_batches_folder():
    assert str(PATHS.batches) in stages()["data_split"]["deps"]
