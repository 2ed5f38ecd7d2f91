"""Each generation parameter is declared once (GenerationConfig); the API, the CLI and /info follow it."""

from dataclasses import fields

import pytest

from diffusion_core import ConfigError, GenerationConfig, config
from diffusion_core.cli import build_parser
from diffusion_core.remasking import REMASKING
from diffusion_core.sampling import SAMPLERS
from diffusion_core.schedules import SCHEDULES
from services.api.schemas import GenerateParameters

PARAMETERS = fields(GenerationConfig)
JSON_SCHEMA_BOUNDS = (("ge", "minimum"), ("gt", "exclusiveMinimum"), ("le", "maximum"), ("lt", "exclusiveMaximum"))


def test_the_named_choices_are_the_registries():
    assert set(config.SCHEDULES) == set(SCHEDULES)
    assert set(config.SAMPLING_RULES) == set(SAMPLERS)
    assert set(config.REMASKING_RULES) == set(REMASKING)


def test_the_api_schema_has_every_parameter_with_its_default_and_bounds():
    schema = GenerateParameters.model_json_schema()["properties"]
    for f in PARAMETERS:
        assert f.name in schema, f.name
        assert GenerateParameters.model_fields[f.name].default == f.default, f.name
        for bound, key in (
            ("ge", "minimum"),
            ("gt", "exclusiveMinimum"),
            ("le", "maximum"),
            ("lt", "exclusiveMaximum"),
        ):
            if f.metadata.get(bound) is not None:
                found = schema[f.name].get(key)
                if found is None:  # an optional field (seed) puts its bounds inside anyOf
                    found = next(option[key] for option in schema[f.name]["anyOf"] if key in option)
                assert found == f.metadata[bound], (f.name, bound)
        assert schema[f.name]["description"] == f.metadata["help"]


def test_the_cli_has_a_flag_per_parameter_with_its_default():
    args = build_parser().parse_args(["generate", "x"])
    assert GenerationConfig(**{f.name: getattr(args, f.name) for f in PARAMETERS}) == GenerationConfig()
    flipped = build_parser().parse_args(["generate", "x", "--no-future-masks", "--forbid-eos", "--cache", "dual"])
    assert not flipped.future_masks and flipped.forbid_eos and flipped.cache == "dual"


@pytest.mark.parametrize(
    ("changes", "field"),
    [({"temperature": 101.0}, "temperature"), ({"top_p": 0.0}, "top_p"), ({"seed": 2**31}, "seed"),
     ({"cache_refresh": 0}, "cache_refresh"), ({"schedule": "quadratic"}, "schedule")],
)  # fmt: skip
def test_the_core_enforces_the_declared_bounds_naming_the_field(changes, field):
    with pytest.raises(ConfigError) as caught:
        GenerationConfig(**changes)
    assert caught.value.param == field


def test_info_serves_every_parameter_for_the_viewer(client):
    served = {p["name"]: p for p in client.get("/info").json()["parameters"]}
    assert list(served) == [f.name for f in PARAMETERS]
    assert served["cache"]["choices"] == list(config.CACHE_MODES) and served["temperature"]["le"] == 100.0
    assert served["future_masks"] == {
        "name": "future_masks", "type": "boolean", "default": True, "help": served["future_masks"]["help"]
    }  # fmt: skip
