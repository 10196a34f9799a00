import os

import pytest

from varformer.config import RECIPES_DIR, config_from_yaml, load_config, save_config
from varformer.errors import ConfigError, VarformerError


def _write(tmp_path, text, name="c.yaml"):
    p = tmp_path / name
    p.write_text(text)
    return str(p)


def test_defaults_are_the_official_recipe():
    cfg = load_config()
    assert cfg.model.depth == 16 and cfg.model.cfg == 0.5
    assert cfg.train.lr == 1e-4 and list(cfg.train.betas) == [0.9, 0.99]
    assert cfg.train.loss.psnr == 0.5 and cfg.train.loss.token_ce == 0.1


def test_yaml_then_overrides_merge_in_order(tmp_path):
    path = _write(tmp_path, "model:\n  depth: 20\ntrain:\n  lr: 2.0e-4\n  loss:\n    perceptual: 0.0\n")
    cfg = load_config(path, ["train.lr=3e-4", "data.tasks=[rain,haze]"])
    assert cfg.model.depth == 20
    assert cfg.train.lr == pytest.approx(3e-4)
    assert cfg.train.loss.perceptual == 0.0
    assert list(cfg.data.tasks) == ["rain", "haze"]


def test_unknown_key_names_key_and_closest_valid_one(tmp_path):
    path = _write(tmp_path, "train:\n  learning_rate: 1.0\n  totl_iters: 5\n")
    with pytest.raises(ConfigError) as e:
        load_config(path)
    msg = str(e.value)
    assert "train.learning_rate" in msg and path in msg


def test_unknown_nested_key_suggests_closest(tmp_path):
    with pytest.raises(ConfigError, match=r"train\.loss\.perceptul.*did you mean 'train\.loss\.perceptual'"):
        load_config(None, ["train.loss.perceptul=0"])
    with pytest.raises(ConfigError, match=r"'modle'.*did you mean 'model'"):
        load_config(None, ["modle.depth=20"])


def test_wrong_type_names_key_and_expected_type():
    with pytest.raises(ConfigError) as e:
        load_config(None, ["model.depth=sixteen"])
    assert "model.depth" in str(e.value) and "int" in str(e.value)
    with pytest.raises(ConfigError, match=r"train\.lr.*float"):
        load_config(None, ["train.lr=fast"])


def test_missing_config_file_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(str(tmp_path / "nope.yaml"))


def test_malformed_override_rejected():
    with pytest.raises(ConfigError, match="key.sub=value"):
        load_config(None, ["train.lr"])


def test_config_errors_are_user_facing():
    assert issubclass(ConfigError, VarformerError)


def test_save_config_round_trips(tmp_path):
    cfg = load_config(None, ["model.depth=20", "train.output_dir=x"])
    path = save_config(cfg, str(tmp_path / "run"))
    again = config_from_yaml(open(path).read(), path)
    assert again == cfg
    rv = load_config("restorevar_stage1.yaml", ["model.depth=2", f"train.output_dir={tmp_path / 'rv'}"])
    path = save_config(rv, str(tmp_path / "rv"))
    assert "method: restorevar" in open(path).read() and config_from_yaml(open(path).read(), path) == rv


# every recipe shipped in varformer/configs (configs/ of a checkout links there) and the method it is for
SHIPPED = {
    "stage1.yaml": "varformer", "stage2.yaml": "varformer",
    "demo_stage1.yaml": "varformer", "demo_stage2.yaml": "varformer",
    "restorevar_stage1.yaml": "restorevar", "restorevar_stage2.yaml": "restorevar",
    "restorevar_decoder.yaml": "restorevar",
    "demo_restorevar_stage1.yaml": "restorevar", "demo_restorevar_stage2.yaml": "restorevar",
    "ablations/baseline.yaml": "varformer", "ablations/fixed.yaml": "varformer", "ablations/dae.yaml": "varformer",
    "ablations/aft.yaml": "varformer", "ablations/full.yaml": "varformer",
    "varestorer_distill.yaml": "varestorer", "demo_varestorer_distill.yaml": "varestorer",
}


def test_shipped_configs_are_the_known_recipes_and_each_loads(recwarn):
    found = {os.path.relpath(os.path.join(d, f), RECIPES_DIR).replace(os.sep, "/")
             for d, _, files in os.walk(RECIPES_DIR) for f in files if f.endswith((".yaml", ".yml"))}
    assert found == set(SHIPPED), (f"recipes added: {sorted(found - set(SHIPPED))}, missing: "
                                   f"{sorted(set(SHIPPED) - found)} (update SHIPPED and the docs that list them)")
    for name, method in SHIPPED.items():
        by_path = load_config(os.path.join(RECIPES_DIR, name))
        assert by_path.method == method, name
        assert load_config(f"configs/{name}") == by_path     # the README's spelling, from any folder
    assert not [str(w.message) for w in recwarn if issubclass(w.category, DeprecationWarning)]


def test_the_checkouts_configs_folder_is_the_shipped_one():
    checkout = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs")
    if not os.path.exists(checkout):   # an installed package without the checkout: nothing to compare
        pytest.skip("no configs/ beside tests/")
    assert os.path.samefile(checkout, RECIPES_DIR)
