"""Loading the official VAR checkpoints: a local path, the `checkpoints/` folder, or the Hugging Face repository
`FoundationVision/var` through `huggingface_hub` (its cache respected, `local_files_only` honoured).

    vae = load_vae()                        # checkpoints/vae_ch160v4096z32.pth or the hub
    var = load_var(16)                      # VAR d16 (+ the VQVAE, reachable as var.vae)
    var = load_var(20, path='/data/var_d20.pth', vae=vae, device='cuda')

Models are built on the meta device (no random init, no memory) and the checkpoint tensors are assigned into them
(`load_state_dict(assign=True)`), so even the 2-billion-parameter d30 is ready in about the time it takes to read
the file. Files are read with `torch.load(weights_only=True)`. A missing file raises `WeightsNotFoundError` naming
the file, the repository and the folder to put it in; a checkpoint of another architecture or depth raises
`CheckpointMismatchError` with the missing/unexpected keys and the depth (or width) it looks like. There is never a
fallback to random weights. The returned models are in eval mode.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

import torch
import torch.nn as nn
from huggingface_hub import constants as hf_constants
from huggingface_hub import hf_hub_download, try_to_load_from_cache

from varformer.backbone.state_dict_check import check_filled, key_mismatch
from varformer.backbone.var import VAR
from varformer.backbone.vqvae import DEFAULT_PATCH_NUMS, VQVAE
from varformer.errors import CheckpointMismatchError, WeightsNotFoundError
from varformer.files import read_state_dict, read_torch_file  # noqa: F401  (re-exported: the readers' old home)

VAR_REPO_ID = 'FoundationVision/var'
VAE_FILENAME = 'vae_ch160v4096z32.pth'
PACKAGE_ROOT = Path(__file__).resolve().parents[2]


def var_filename(depth: int) -> str:
    return f'var_d{depth}.pth'


def checkpoint_dirs(checkpoints_dir: str | os.PathLike | None = None) -> list[Path]:
    """Folders searched before the hub: the given one, else `$VARFORMER_CHECKPOINTS`, `./checkpoints` and the
    `checkpoints/` folder of this checkout."""
    if checkpoints_dir is not None:
        return [Path(checkpoints_dir)]
    dirs = []
    if os.environ.get('VARFORMER_CHECKPOINTS'):
        dirs.append(Path(os.environ['VARFORMER_CHECKPOINTS']))
    dirs += [Path.cwd() / 'checkpoints', PACKAGE_ROOT / 'checkpoints']
    unique: list[Path] = []
    for d in dirs:
        if d.resolve() not in [u.resolve() for u in unique]:
            unique.append(d)
    return unique


def find_local_file(filename: str, path: str | os.PathLike | None = None,
                    checkpoints_dir: str | os.PathLike | None = None, hint: str = "") -> Path:
    """``path`` (a file, or a folder holding ``filename``), else ``filename`` in the checkpoint folders (no hub);
    one ``WeightsNotFoundError`` line ending with ``hint`` (where the file comes from) when neither has it."""
    if path is not None:
        p = Path(path).expanduser()
        if p.is_dir():
            p = p / filename
        if p.is_file():
            return p
        raise WeightsNotFoundError(f"{p} does not exist" + (f"; {hint}" if hint else ""))
    dirs = checkpoint_dirs(checkpoints_dir)
    for d in dirs:
        if (d / filename).is_file():
            return d / filename
    raise WeightsNotFoundError(f"{filename} not found in {', '.join(str(d) for d in dirs)}"
                               + (f"; {hint}" if hint else ""))


def _download_hint(filename: str, repo_id: str, dirs: list[Path]) -> str:
    return (f"download it from https://huggingface.co/{repo_id}/resolve/main/{filename} "
            f"(e.g. `hf download {repo_id} {filename} --local-dir checkpoints`; `huggingface-cli download ...` with "
            f"huggingface_hub < 1.0) and put it in "
            f"{dirs[0]}/, or pass its path")


def hub_file(repo_id: str, filename: str, local_files_only: bool = False) -> Path:
    """A file of a Hugging Face repository, from the hub's cache or downloaded into it. ``local_files_only``: the
    cache only, looked up without touching the hub or writing anything (``hf_hub_download`` of older
    huggingface_hub creates cache folders even on a miss, which a dry run must not)."""
    cache = hf_constants.HF_HUB_CACHE  # read at call time (huggingface_hub < 0.23 fixed its default at import)
    if local_files_only:
        found = try_to_load_from_cache(repo_id, filename, cache_dir=cache)
        if isinstance(found, str) and os.path.isfile(found):
            return Path(found)
        raise FileNotFoundError(f"{repo_id}/{filename} is not in the Hugging Face cache {cache}")
    return Path(hf_hub_download(repo_id=repo_id, filename=filename, cache_dir=cache))


def resolve_weight_file(filename: str, *, path: str | os.PathLike | None = None, repo_id: str = VAR_REPO_ID,
                        checkpoints_dir: str | os.PathLike | None = None, local_files_only: bool = False) -> Path:
    """Find `filename`: the explicit `path` if given (must exist), else the checkpoint folders, else
    the Hugging Face cache or a download (`hub_file`); raises `WeightsNotFoundError` when all fail."""
    dirs = checkpoint_dirs(checkpoints_dir)
    if path is not None:
        p = Path(path)
        if p.is_dir():
            p = p / filename
        if not p.is_file():
            raise WeightsNotFoundError(f"weight file {p} does not exist; {_download_hint(filename, repo_id, dirs)}")
        return p
    for d in dirs:
        if (d / filename).is_file():
            return d / filename
    try:
        return hub_file(repo_id, filename, local_files_only)
    except Exception as exc:  # offline, cache miss, missing repo/file, network error: all mean "not available"
        where = ', '.join(str(d) for d in dirs)
        raise WeightsNotFoundError(
            f"could not find {filename}: not in {where} and not available from the Hugging Face repository "
            f"{repo_id} ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}); "
            f"{_download_hint(filename, repo_id, dirs)}") from exc


def hub_offline(local_files_only: bool = False) -> bool:
    """Whether the hub may not be reached: ``local_files_only`` or ``HF_HUB_OFFLINE``."""
    env = os.environ.get('HF_HUB_OFFLINE', '').lower() in ('1', 'true', 'yes', 'on')
    return bool(local_files_only or env or hf_constants.HF_HUB_OFFLINE)


def locate_backbone_file(what: str, filename: str, path: str | os.PathLike | None, local_files_only: bool = False,
                         repo_id: str = VAR_REPO_ID) -> tuple[str, str | None]:
    """Where a run will find ``filename`` without reading it: (a line for the plan, a note or None). A file that
    is only on the hub is a note (downloaded at start) unless the hub is off-limits, then the error."""
    try:
        where = resolve_weight_file(filename, path=path, repo_id=repo_id, local_files_only=True)
        return f"{what}: {where}", None
    except WeightsNotFoundError:
        if path is not None or hub_offline(local_files_only):
            raise
    return (f"{what}: {filename} not found locally",
            f"{filename} will be downloaded from the Hugging Face repository {repo_id} at start "
            "(model.local_files_only=true forbids it)")


def describe_backbone_state_dict(sd: dict) -> str | None:
    """What a plain state dict of the frozen VAR backbone is (None: neither a VAR nor a VQVAE file)."""
    blocks = {int(m.group(1)) for k in sd for m in [re.match(r'blocks\.(\d+)\.', str(k))] if m}
    if blocks and 'word_embed.weight' in sd:
        return (f"a VAR transformer file (depth {max(blocks) + 1}, var_d{max(blocks) + 1}.pth): a frozen backbone "
                "file, not a checkpoint of a method")
    if 'encoder.conv_in.weight' in sd and any(str(k).startswith('quantize.') for k in sd):
        return (f"a VQVAE tokenizer file (width {sd['encoder.conv_in.weight'].shape[0]}): a frozen backbone file, "
                "not a checkpoint of a method")
    return None


def guess_var_depth(state_dict: dict[str, torch.Tensor]) -> str:
    """What a state dict looks like, for error messages: 'a depth-20 VAR (width 1280)', 'a VQVAE (ch=160)', ..."""
    block_ids = {int(m.group(1)) for k in state_dict for m in [re.match(r'blocks\.(\d+)\.', k)] if m}
    if block_ids:
        width = state_dict['pos_start'].shape[-1] if 'pos_start' in state_dict else None
        return f"a depth-{max(block_ids) + 1} VAR" + (f" (width {width})" if width is not None else '')
    if 'encoder.conv_in.weight' in state_dict:
        return f"a VQVAE with ch={state_dict['encoder.conv_in.weight'].shape[0]}"
    if any(k.startswith(('params', 'params_ema', 'net_g')) for k in state_dict) or any('cross_attn' in k for k in state_dict):
        return "a checkpoint of a restoration method (BasicSR layout), not a VAR backbone file"
    return "an unknown architecture"


def check_state_dict(model: nn.Module, state_dict: dict[str, torch.Tensor], path, expected: str,
                     ignore_shape: tuple[str, ...] = ()) -> None:
    """Raise `CheckpointMismatchError` unless `state_dict` has exactly the model's keys and shapes."""
    mismatch = key_mismatch(model.state_dict(), state_dict, ignore_shape)
    if not mismatch:
        return
    parts = [f"checkpoint {path} does not fit {expected}:", *mismatch]
    parts.append(f"it looks like {guess_var_depth(state_dict)}.")
    raise CheckpointMismatchError(' '.join(parts))


def load_vae(path: str | os.PathLike | None = None, *, ch: int = 160, vocab_size: int = 4096,
             z_channels: int = 32, share_quant_resi: int = 4, patch_nums: tuple[int, ...] = DEFAULT_PATCH_NUMS,
             device: str | torch.device = 'cpu', repo_id: str = VAR_REPO_ID, filename: str = VAE_FILENAME,
             checkpoints_dir: str | os.PathLike | None = None, local_files_only: bool = False) -> VQVAE:
    """The official VQVAE tokenizer (`vae_ch160v4096z32.pth`), in eval mode on `device`."""
    file = resolve_weight_file(filename, path=path, repo_id=repo_id, checkpoints_dir=checkpoints_dir,
                               local_files_only=local_files_only)
    sd = read_state_dict(file, map_location=device)
    with torch.device('meta'):
        vae = VQVAE(vocab_size=vocab_size, z_channels=z_channels, ch=ch, share_quant_resi=share_quant_resi,
                    patch_nums=patch_nums)
    check_state_dict(vae, sd, file, f"VQVAE(ch={ch}, vocab_size={vocab_size}, z_channels={z_channels})",
                     ignore_shape=('quantize.ema_vocab_hit_SV',))
    vae.load_state_dict(sd, strict=True, assign=True)
    check_filled(vae, file)
    return vae.eval()


def load_var(depth: int = 16, path: str | os.PathLike | None = None, *, vae: VQVAE | None = None,
             vae_path: str | os.PathLike | None = None, num_classes: int = 1000, shared_aln: bool = False,
             attn_l2_norm: bool = True, device: str | torch.device = 'cpu', repo_id: str = VAR_REPO_ID,
             filename: str | None = None, checkpoints_dir: str | os.PathLike | None = None,
             local_files_only: bool = False) -> VAR:
    """The official VAR transformer of the given depth (`var_d{depth}.pth`), in eval mode on `device`.

    `vae`: the VQVAE to attach (else loaded with `load_vae(vae_path, ...)`); it is reachable as `var.vae`."""
    filename = filename or var_filename(depth)
    file = resolve_weight_file(filename, path=path, repo_id=repo_id, checkpoints_dir=checkpoints_dir,
                               local_files_only=local_files_only)
    if vae is None:
        vae = load_vae(vae_path, device=device, repo_id=repo_id, checkpoints_dir=checkpoints_dir,
                       local_files_only=local_files_only)
    sd = read_state_dict(file, map_location=device)
    with torch.device('meta'):
        var = VAR(vae, depth=depth, num_classes=num_classes, shared_aln=shared_aln, attn_l2_norm=attn_l2_norm,
                  random_init=False)
    check_state_dict(var, sd, file, f"VAR(depth={depth})")
    var.load_state_dict(sd, strict=True, assign=True)
    check_filled(var, file)
    return var.eval()
