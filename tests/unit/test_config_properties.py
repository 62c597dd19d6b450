"""Property tests: any mutation of a valid params.yaml is accepted as valid or rejected with one line."""

from __future__ import annotations

import copy

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from src.config import Config, ConfigError, load_config
from tests.conftest import PROJECT_ROOT

TEMPLATE = yaml.safe_load((PROJECT_ROOT / "params.yaml").read_text())
KEYS = [(section, key) for section, values in TEMPLATE.items() for key in values]

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**12), max_value=10**12),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=6,
)


@st.composite
def mutations(draw) -> dict:
    document = copy.deepcopy(TEMPLATE)
    for _ in range(draw(st.integers(min_value=1, max_value=3))):
        section, key = draw(st.sampled_from(KEYS))
        kind = draw(st.sampled_from(["replace", "delete", "add", "drop_section", "replace_section"]))
        if section not in document or not isinstance(document[section], dict):
            continue
        if kind == "replace":
            document[section][key] = draw(values)
        elif kind == "delete":
            document[section].pop(key, None)
        elif kind == "add":
            document[section][draw(st.text(min_size=1, max_size=12))] = draw(values)
        elif kind == "drop_section":
            document.pop(section)
        else:
            document[section] = draw(values)
    return document


def check(path) -> None:
    try:
        config = load_config(path)
    except ConfigError as error:
        message = str(error)
        assert message.startswith(f"{path}: "), message
        assert "\n" not in message, message
        assert "Traceback" not in message
    else:
        assert isinstance(config, Config)
        Config.model_validate(config.model_dump())


@settings(
    max_examples=300, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(document=mutations())
def test_mutated_params_are_valid_or_rejected_in_one_line(tmp_path, document):
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(document, allow_unicode=True))
    check(path)


@settings(
    max_examples=200, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(position=st.integers(min_value=0, max_value=2000), junk=st.text(min_size=1, max_size=5))
def test_damaged_yaml_text_is_valid_or_rejected_in_one_line(tmp_path, position, junk):
    text = (PROJECT_ROOT / "params.yaml").read_text()
    position %= len(text)
    path = tmp_path / "params.yaml"
    path.write_text(text[:position] + junk + text[position:])
    check(path)
