"""prism-train checks its config once, up front: every numeric field finite and in range (named in
a one-line error, exit 2), and a missing --config file is named, wherever it is run from."""

import math

import pytest

from policies.configuration_train import FIELD_RANGES, RLTrainConfig, parse_train_config
from policies.train import main as train_main


@pytest.mark.parametrize("name", [*sorted(FIELD_RANGES), "success_reward"])
@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_every_numeric_field_must_be_finite(name, bad):
    with pytest.raises(ValueError, match="--" + name.replace("_", "-")):
        RLTrainConfig(**{name: bad})


@pytest.mark.parametrize(
    "name, value",
    [
        ("gamma", 0.0),
        ("n_envs", 0),
        ("steps", 1.5),
        ("seed", -1),
        ("eval_episodes", 0),
        ("success_delta", 1.0),
        ("demo_fraction", 1.0),
        ("checkpoint_minutes", -1.0),
        ("max_episode_steps", 0),
        ("image_size", 4),
    ],
)
def test_out_of_range_fields_are_named(name, value):
    with pytest.raises(ValueError, match="--" + name.replace("_", "-")):
        RLTrainConfig(**{name: value})


@pytest.mark.parametrize(
    "key, value",
    [
        ("learning_starts", math.nan),
        ("tau", math.nan),
        ("tau", 0.0),
        ("learning_rate", -1e-3),
        ("learning_rate", math.inf),
        ("batch_size", 0),
        ("gradient_steps", 0),
        ("buffer_size", 10.5),
        ("ent_coef", "auto_nan"),
        ("ent_coef", math.nan),
        ("gae_lambda", 2.0),
        ("some_new_sb3_arg", math.nan),
    ],
)
def test_hyperparams_are_checked(key, value):
    with pytest.raises(ValueError, match=f"hyperparams.{key}"):
        RLTrainConfig(hyperparams={key: value})


def test_valid_values_pass_and_counts_become_ints():
    cfg = RLTrainConfig(
        steps=100.0,
        max_episode_steps=None,
        hyperparams={"learning_starts": 0, "gradient_steps": -1, "ent_coef": "auto_0.01", "tau": 1.0},
    )
    assert cfg.steps == 100 and isinstance(cfg.steps, int)


@pytest.mark.parametrize(
    "line, field",
    [
        ("hyperparams: {learning_starts: .nan}", "hyperparams.learning_starts"),
        ("hyperparams: {tau: .nan}", "hyperparams.tau"),
        ("gamma: .nan", "--gamma"),
    ],
)
def test_nan_in_yaml_is_a_one_line_error(tmp_path, capsys, line, field):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"task: reach\nsteps: 100\n{line}\n")
    out = tmp_path / "run"
    assert train_main(["--config", str(cfg), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("prism-train: error: ") and field in err and "c.yaml" in err
    assert not out.exists()


def test_missing_config_is_named_relative_to_the_working_directory(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert train_main(["--config", "missing.yaml", "--out", "run"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "missing.yaml does not exist" in err and str(tmp_path) in err
    assert "Traceback" not in err
    assert train_main(["--config=other/missing.yaml", "--out", "run"]) == 2
    assert "other/missing.yaml" in capsys.readouterr().err
    # a relative path that exists is read from the working directory
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "c.yaml").write_text("task: reach\nsteps: 123\n")
    assert parse_train_config(["--config", "sub/c.yaml"]).steps == 123
    assert not (tmp_path / "run").exists()


def test_debug_shows_the_traceback(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.yaml"):
        train_main(["--config", str(tmp_path / "missing.yaml"), "--debug"])
