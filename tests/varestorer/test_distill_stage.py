"""``varformer train distill`` through the shared trainer on the reduced model (random-init backbone, random text
features, a folder of four clean images): training, exact resume, the exported files, the checks of the stage, the
dry-run's memory plan."""
import os

import numpy as np
import pytest
import torch
from distill_testutils import TINY
from PIL import Image

from varformer.config import load_config
from varformer.errors import ConfigError
from varformer.training import checkpoint as ckpt_io
from varformer.training.plan import plan_run
from varformer.training.run import run_training
from varformer.varestorer.files import load_varestorer
from varformer.varestorer.model import VARestorer


@pytest.fixture(scope="module")
def clean_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("clean")
    rng = np.random.default_rng(0)
    for i in range(4):
        y, x = np.mgrid[0:72, 0:90]
        img = np.stack([x * 2 + 40 * i, y * 3, (x + y) % 256], -1) + rng.integers(0, 30, (72, 90, 3))
        Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(folder / f"img{i}.png")
    return str(folder)


def config(folder, out, **changes):
    values = {"method": "varestorer", **{f"model.{k}": (str(v).replace(" ", "") if isinstance(v, list) else v)
                                         for k, v in TINY.items()},
              "data.root": folder, "data.crop_size": 64, "data.flip": True, "data.batch_size": 2,
              "data.num_workers": 0, "data.persistent_workers": False, "train.output_dir": out,
              "train.total_iters": 4, "train.save_every": 2, "train.log_every": 2, "train.image_every": 0,
              "train.val_every": 0, "train.precision": "fp32", "train.lr": 1e-3, "train.ema_decay": 0.5,
              "train.grad_clip": 1.0, "train.optimizer": "adamw", "train.loss.random_init_backbone": True,
              "train.loss.text_encoder": "random", "train.loss.caption_source": "fixed",
              "train.loss.fixed_prompt": "a photo", "train.loss.lpips_weight": 0, "train.loss.frozen_dtype": "fp32",
              "train.loss.text_drop_rate": 0.5, "train.loss.student_drop_path": 0.1}
    values.update(changes)
    return load_config(None, [f"{k}={v}" for k, v in values.items()])


def _final(out):
    return torch.load(ckpt_io.list_checkpoints(out)[-1][1], weights_only=True)


def test_trains_resumes_exactly_and_exports(clean_folder, tmp_path):
    a = str(tmp_path / "a")
    res = run_training("distill", config(clean_folder, a), progress=False, print_config=False)
    assert res.status == "finished" and res.step == 4
    assert {h["step"] for h in res.history} == {2, 4} and all(np.isfinite(h["loss/total"]) for h in res.history)
    assert {"loss/kl", "loss/mse", "loss/metric_bit_acc"} <= set(res.history[-1])
    ck = _final(a)
    lora = {k for k in ck["ema"]}
    assert lora and all(".lora_down." in k or ".lora_up." in k for k in lora)

    b = str(tmp_path / "b")
    run_training("distill", config(clean_folder, b, **{"train.total_iters": 2}), progress=False, print_config=False)
    torch.manual_seed(999)                       # another process: other RNG states until the resume restores them
    again = run_training("distill", config(clean_folder, b), progress=False, print_config=False)
    assert again.step == 4
    ref, got = ck, _final(b)
    for part in ("model", "ema"):
        assert set(ref[part]) == set(got[part])
        assert all(torch.equal(ref[part][k], got[part][k]) for k in ref[part]), part
    assert [h["loss/total"] for h in res.history if h["step"] == 4] == \
           [h["loss/total"] for h in again.history if h["step"] == 4]

    # the exports: our model file and the release's layout, both with the EMA weights
    assert res.export == os.path.join(a, "final_ema.safetensors")
    ours = load_varestorer(res.export)
    official = os.path.join(a, "final_ema_official")
    assert sorted(os.listdir(official)) == ["general_swinir_v1.ckpt", "infinity_vae_d32reg.pth", "varestorer.pth"]
    loaded = VARestorer.from_official(*(os.path.join(official, f) for f in ("varestorer.pth",
                                                                            "infinity_vae_d32reg.pth",
                                                                            "general_swinir_v1.ckpt")),
                                      patch_nums=TINY["patch_nums"])
    sd = loaded.state_dict()
    assert set(sd) == set(ours.state_dict())
    assert all(torch.equal(v, sd[k]) for k, v in ours.state_dict().items())
    ema_key = next(iter(ck["ema"]))
    assert torch.equal(sd[ema_key], ck["ema"][ema_key])


def test_stage_refuses_bad_settings_in_one_line(clean_folder, tmp_path):
    out = str(tmp_path / "x")
    cases = [({"data.crop_size": 128}, "data.crop_size=128"),
             ({"train.loss.frozen_dtype": "bf16"}, "frozen_dtype=bf16"),
             ({"train.loss.random_init_backbone": False}, "text_encoder=random"),
             ({"model.swinir": False}, "preclean_lq=true"),
             ({"train.loss.bit_loss": "mse"}, "bit_loss must be one of"),
             ({"train.loss.degradation.kernel_size": 40}, "kernel_size"),
             ({"model.lora_rank": 0}, "lora_rank must be > 0")]
    for change, words in cases:
        with pytest.raises(ConfigError, match=words.replace("[", r"\[")):
            run_training("distill", config(clean_folder, out, **change), progress=False, print_config=False)
    assert not os.path.exists(os.path.join(out, "config.yaml"))        # refused before anything was written


def test_dry_run_prints_the_memory_plan_per_gpu(clean_folder, tmp_path):
    lines = plan_run("distill", config(clean_folder, str(tmp_path / "p"), **{"train.grad_checkpointing": True}))
    text = "\n".join(lines)
    assert "VARestorer distill" in lines[0] and "RANDOM-INIT" in text
    memory = [line for line in lines if line.startswith("memory")]
    assert memory[0].startswith("memory: ~") and "activation checkpointing on" in memory[0]
    assert [m.split(":")[1].strip().split(" ")[0] for m in memory[1:]] == ["24", "40", "80"]
    assert all("micro-batch up to" in m for m in memory[1:])


def test_caption_list_feeds_the_jsonl_data_source(clean_folder, tmp_path):
    """`varformer convert varestorer-captions`' work: every image captioned once through the cache, Infinity's
    jsonl written (paths relative to the list when the images are under it), the captions' features cached; the
    list is then a data.root the training dataset reads."""
    from text_testutils import FakeCaptioner, FakeEncoder

    from varformer.data.sr_train import SRTrainingDataset, list_sr_sources
    from varformer.varestorer.distill_captions import caption_folder
    from varformer.varestorer.text import TextCache

    cache, blip, t5 = TextCache(tmp_path / "cache"), FakeCaptioner(), FakeEncoder()
    out = str(tmp_path / "list.jsonl")
    lines = caption_folder(clean_folder, out, cache, blip, t5)
    assert lines[0].startswith("4 images") and "4 captioned now" in lines[0] and blip.images == 4
    again = caption_folder(clean_folder, out, cache, FakeCaptioner(), None)
    assert "0 captioned now" in again[0]
    sources = list_sr_sources(out)
    assert [os.path.basename(s.path) for s in sources] == [f"img{i}.png" for i in range(4)]
    assert all(s.text in ("a red photo", "a photo of the sea") for s in sources)
    assert t5.calls == 1 and set(t5.prompts) == {s.text for s in sources}
    item = SRTrainingDataset(sources, size=64, caption_source="jsonl")[0]
    assert item["caption"] == sources[0].text


def test_built_from_the_pretrained_files(clean_folder, tmp_path):
    """Without random init: the student's base and the teacher are infinity_2b_reg.pth's tensors (the wrapped
    linears under .linear), the LoRA fresh (up = 0), the VAE and SwinIR from their files; a LoRA file in place of
    the base is refused in one line."""
    from distill_testutils import official_files

    from varformer.errors import CheckpointMismatchError
    from varformer.varestorer.distill_stage import build_task, check_inputs

    (inf_path, vae_path, sw_path), inf = official_files(tmp_path)
    cfg = config(clean_folder, str(tmp_path / "run"), **{"train.loss.random_init_backbone": False,
                                                          "train.loss.text_encoder": "t5",
                                                          "model.text_cache": str(tmp_path / "cache"),
                                                          "train.loss.infinity_path": inf_path,
                                                          "model.vae_path": vae_path, "model.swinir_path": sw_path})
    found = check_inputs(cfg)
    assert [w.split(":")[0] for w in found.weights] == ["Infinity (teacher and student base)", "BSQ-VAE", "SwinIR"]
    task = build_task(cfg, announce=lambda line: None)
    sd = task.model.state_dict()
    key = "block_chunks.1.module.0.ca.mat_kv.weight"
    assert torch.equal(sd["transformer." + key.replace("mat_kv.", "mat_kv.linear.")], inf[key])
    assert torch.equal(sd["transformer.cfg_uncond"], inf["cfg_uncond"])
    assert torch.equal(dict(task.teacher.named_parameters())[key], inf[key])
    assert not sd["transformer." + key.replace("mat_kv.", "mat_kv.lora_up.")].any()
    assert task.model.swinir is not None and task.text.identity.startswith("t5-encoder")
    lora_file = str(tmp_path / "lora.pth")
    with_lora = dict(inf, **{key.replace("mat_kv.weight", "mat_kv.lora_down.weight"): torch.zeros(4, 128)})
    torch.save(with_lora, lora_file)
    with pytest.raises(CheckpointMismatchError, match="already holds LoRA"):
        build_task(config(clean_folder, str(tmp_path / "run"), **{"train.loss.random_init_backbone": False,
                                                                  "train.loss.text_encoder": "t5",
                                                                  "train.loss.infinity_path": lora_file,
                                                                  "model.vae_path": vae_path,
                                                                  "model.swinir_path": sw_path}), lambda line: None)
