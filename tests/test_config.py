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


def test_every_training_default_and_lower_bound_is_trainconfigs_or_a_declared_job_default():
    from diffusion_core.config import TrainConfig
    from services.api.schemas import JOB_DEFAULTS, Hyperparameters

    core = {f.name: f for f in fields(TrainConfig)}
    resolved = Hyperparameters().resolved(positions=10_000)
    names = {"n_epochs": "epochs"}
    for api_name, value in resolved.items():
        name = names.get(api_name, api_name)
        if name not in core or name == "max_steps":  # max_steps: none in a job, 0 in the core; both mean epochs
            assert api_name in ("n_devices", "max_steps"), f"{api_name} is neither TrainConfig's nor declared"
            continue
        expected = JOB_DEFAULTS[name][0] if name in JOB_DEFAULTS else core[name].default
        assert value == (list(expected) if isinstance(expected, tuple) else expected), api_name
        field = Hyperparameters.model_json_schema()["properties"][api_name]
        assert core[name].metadata["help"] in field["description"], api_name
    assert Hyperparameters().max_steps is None and core["max_steps"].default == 0
    assert set(JOB_DEFAULTS) <= set(core) and all(reason for _, reason in JOB_DEFAULTS.values())
    assert Hyperparameters.model_validate({"max_length": 8}).max_length == 8 == core["max_length"].metadata["ge"]


def test_every_train_flag_is_a_trainconfig_field_with_its_default():
    from diffusion_core.config import TrainConfig

    train = next(a for a in build_parser()._subparsers._group_actions[0].choices.items() if a[0] == "train")[1]
    flags = {a.dest: a for a in train._actions if a.dest != "help"}
    for f in fields(TrainConfig):
        assert f.name in flags, f.name
        if f.name not in ("data", "output"):
            assert flags[f.name].default == f.default, f.name
    assert set(flags) == {f.name for f in fields(TrainConfig)}
