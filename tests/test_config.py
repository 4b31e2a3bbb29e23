"""Config validation: every bad key, type or value is an error naming the dotted key."""
from __future__ import annotations

import pytest

from ebm_vae.core.config import Config, config_from_dict, dump_config, load_config
from ebm_vae.utils.typed_yaml import ConfigError, build, load_raw
from tests.conftest import TINY


def test_experiment_files_load():
    mnist = load_config("experiments/mnist.yaml")
    assert (mnist.train.batch_size, mnist.train.num_chains, mnist.langevin.steps) == (400, 400, 50)
    assert mnist.langevin.step_size == 0.001 and mnist.train.gamma == 3.0
    fashion = load_config("experiments/fashion_mnist.yaml")  # base: mnist.yaml
    assert fashion.data.name == "fashion_mnist" and fashion.model == mnist.model
    cifar = load_config("experiments/cifar10.yaml")
    assert (cifar.train.batch_size, cifar.train.num_chains, cifar.langevin.steps) == (250, 900, 15)
    assert cifar.data.shuffle == "never" and cifar.model.latent_dim == 200


def test_resolved_config_round_trips(tmp_path):
    cfg = load_config("experiments/cifar10.yaml", ["train.gamma=1.5", "langevin.ref_sigma=null"])
    dump_config(cfg, tmp_path / "c.yaml")
    assert load_config(tmp_path / "c.yaml") == cfg
    assert cfg.langevin.ref_sigma is None and cfg.train.gamma == 1.5


@pytest.mark.parametrize("override, key", [
    ("train.gama=2", "train.gama"),                       # unknown key
    ("train.batch_size=abc", "train.batch_size"),         # wrong type
    ("train.batch_size=2.5", "train.batch_size"),         # float for int
    ("langevin.noise=1", "langevin.noise"),               # int for bool
    ("langevin.step_size=-0.1", "langevin.step_size"),    # out of range
    ("train.num_chains=0", "train.num_chains"),
    ("train.beta1=1.0", "train.beta1"),
    ("data.name=svhn", "data.name"),                      # not an allowed value
    ("data.shuffle=sometimes", "data.shuffle"),
    ("device=tpu", "device"),
    ("model.encoder.dropout=1.0", "model.encoder.dropout"),
    ("model.latent_dim=0", "model.latent_dim"),
    ("model.image_size=32", "model.decoder.layers"),     # decoder no longer produces the image size
    ("model.decoder.layers.0.output_padding=3", "model.decoder.layers.0.output_padding"),
    ("model.ebm.conv=[]", "model.ebm.conv"),
    ("data.root=''", "data.root"),
])
def test_bad_values_name_the_key(override, key):
    with pytest.raises(ConfigError, match=f"'{key}'"):
        load_config("experiments/mnist.yaml", [override])


def test_missing_required_key(tiny_raw):
    del tiny_raw["train"]["gamma"]
    with pytest.raises(ConfigError, match="'train.gamma': is required"):
        config_from_dict(tiny_raw)


def test_scientific_notation_without_dot_is_a_number():
    assert load_config("experiments/mnist.yaml", ["train.lr_vae=1e-4"]).train.lr_vae == 1e-4


def test_bad_files(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")
    (tmp_path / "bad.yaml").write_text("train: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(tmp_path / "bad.yaml")
    (tmp_path / "loop.yaml").write_text("base: loop.yaml\n")
    with pytest.raises(ConfigError, match="cycle"):
        load_config(tmp_path / "loop.yaml")
    with pytest.raises(ConfigError, match="dotted.key=value"):
        load_config("experiments/mnist.yaml", ["train.gamma"])


def test_an_alias_bomb_is_refused_at_once_in_one_short_line(tmp_path):
    """Nine levels of nine-fold YAML aliases (9^10 strings if expanded): the loader shares them,
    and the error shows the value cut short instead of writing it out."""
    lines = ['a0: &a0 ["x", "x", "x", "x", "x", "x", "x", "x", "x"]']
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 10)]
    (tmp_path / "bomb.yaml").write_text("\n".join(lines + ["seed: *a9"]) + "\n")
    raw = load_raw(tmp_path / "bomb.yaml")
    del raw["a0"]
    for i in range(1, 10):
        del raw[f"a{i}"]
    with pytest.raises(ConfigError) as err:
        build(Config, {**TINY, "seed": raw["seed"]})
    assert "config key 'seed': must be an integer, got [[[" in str(err.value)
    assert len(str(err.value)) < 300
