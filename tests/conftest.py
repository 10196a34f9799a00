import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never reach a hub


@pytest.fixture(autouse=True, scope="session")
def _torch_threads():
    """One intra-op thread for the whole suite: the test models are small (width 32, VAR depth 2), so a second
    OpenMP thread gains little, and on a busy 2-core machine it makes every small op wait at a barrier (measured
    several times slower). Results do not depend on it: every tolerance holds for any thread count."""
    import torch
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def small_runs(tmp_path_factory):
    """Two real one-step training runs of the small model (stage 1, then stage 2 from it) on tiny image folders,
    with the frozen VQVAE/VAR read from files (saved from a seeded random model), as the official runs read theirs:
    their checkpoints hold only what was trained. Shared by the tests of resume, restore, evaluate and convert."""
    import numpy as np
    import torch
    from PIL import Image

    from varformer.config import load_config
    from varformer.model import VarFormer
    from varformer.training.run import run_training

    base = tmp_path_factory.mktemp("runs")
    torch.manual_seed(0)
    backbone = VarFormer(depth=2, vae_ch=32, n_cross=1)
    torch.save(backbone.vae.state_dict(), base / "vae.pth")
    torch.save(backbone.var.state_dict(), base / "var.pth")
    rng = np.random.default_rng(0)
    for i in range(2):
        clean = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
        for sub, img in (("clean", clean), ("train/rain/target", clean), ("train/rain/input", clean // 2)):
            os.makedirs(base / sub, exist_ok=True)
            Image.fromarray(img).save(base / sub / f"{i}.png")
    common = ["model.depth=2", "model.vae_ch=32", "model.n_cross=1", f"model.vae_path={base / 'vae.pth'}",
              f"model.var_path={base / 'var.pth'}", "data.batch_size=1", "data.num_workers=0",
              "data.persistent_workers=false", "train.total_iters=1", "train.save_every=1", "train.log_every=1",
              "train.image_every=0", "train.val_every=0", "train.precision=fp32", "train.device=cpu",
              "train.loss.perceptual=0", "train.lr=1e-3"]
    s1 = load_config(None, common + [f"data.root={base / 'clean'}", f"train.output_dir={base / 's1'}"])
    run_training("stage1", s1, progress=False, print_config=False)
    s2 = load_config(None, common + [f"data.root={base / 'train'}", "data.tasks=[rain]",
                                     f"model.stage1_weights={base / 's1' / 'final_ema.pt'}",
                                     f"train.output_dir={base / 's2'}"])
    run_training("stage2", s2, progress=False, print_config=False)
    return {"base": base, "s1": base / "s1", "s2": base / "s2", "common": common}

