import pytest

from varformer.cli import main


def test_train_command_passes_config_and_overrides(monkeypatch, tmp_path):
    seen = {}

    def fake_run(stage, cfg, progress=True, overwrite=False):
        seen.update(stage=stage, cfg=cfg, progress=progress, overwrite=overwrite)
        return type("R", (), {"status": "finished"})()

    monkeypatch.setattr("varformer.training.run.run_training", fake_run)
    rc = main(["train", "stage2", "--config", "configs/demo_stage2.yaml", "train.lr=3e-4",
               f"train.output_dir={tmp_path}", "--no-progress"])
    assert rc == 0 and seen["stage"] == "stage2" and seen["progress"] is False
    assert seen["cfg"].train.lr == pytest.approx(3e-4) and seen["cfg"].model.vae_ch == 32
    rc = main(["train", "stage1", "data.batch_size=3", "--config", "configs/stage1.yaml"])
    assert rc == 0 and seen["stage"] == "stage1" and seen["cfg"].data.batch_size == 3 and seen["cfg"].model.n_cross == 20


def test_train_command_config_errors(capsys):
    assert main(["train", "stage1", "--config", "configs/stage1.yaml", "train.lr_typo=1"]) == 2
    assert "unknown config key 'train.lr_typo'" in capsys.readouterr().err
    assert main(["train", "stage2", "--config", "configs/nope.yaml"]) == 2
    assert "config file not found" in capsys.readouterr().err


def test_shipped_recipes_hold_the_official_numbers():
    from varformer.config import load_config
    s1, s2 = load_config("configs/stage1.yaml"), load_config("configs/stage2.yaml")
    for cfg in (s1, s2):
        assert cfg.train.lr == 1e-4 and list(cfg.train.betas) == [0.9, 0.99]
        assert list(cfg.train.milestones) == [400000, 450000] and cfg.train.gamma == 0.5
        assert cfg.train.ema_decay == 0.998 and cfg.train.seed == 114514 and cfg.model.depth == 20
    assert s1.train.total_iters == 500000 and s1.data.batch_size == 4 and s1.model.n_cross == 20
    assert s2.train.total_iters == 700000 and s2.data.batch_size == 16 and s2.model.n_cross == 6
    assert s2.model.dec_adjust and s2.data.crop_size == 256 and not s2.data.flip and not s2.data.rot90
    loss = s2.train.loss
    assert (loss.pixel_l1, loss.psnr, loss.perceptual, loss.token_ce, loss.feature_l2) == (1.0, 0.5, 1.0, 0.1, 0.5)
    assert list(s2.data.task_weights) == []  # equal probabilities (the official intent)
