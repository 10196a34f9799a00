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
import pickle
import re
import zipfile
from pathlib import Path

import torch
import torch.nn as nn
from huggingface_hub import constants as hf_constants
from huggingface_hub import hf_hub_download

from varformer.backbone.state_dict_check import check_filled, key_mismatch
from varformer.backbone.var import VAR
from varformer.backbone.vqvae import DEFAULT_PATCH_NUMS, VQVAE
from varformer.errors import CheckpointMismatchError, WeightsNotFoundError

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


def _download_hint(filename: str, repo_id: str, dirs: list[Path]) -> str:
    return (f"download it from https://huggingface.co/{repo_id}/resolve/main/{filename} "
            f"(e.g. `hf download {repo_id} {filename} --local-dir checkpoints`; `huggingface-cli download ...` with "
            f"huggingface_hub < 1.0) and put it in "
            f"{dirs[0]}/, or pass its path")


def resolve_weight_file(filename: str, *, path: str | os.PathLike | None = None, repo_id: str = VAR_REPO_ID,
                        checkpoints_dir: str | os.PathLike | None = None, local_files_only: bool = False) -> Path:
    """Find `filename`: the explicit `path` if given (must exist), else the checkpoint folders, else
    `huggingface_hub.hf_hub_download(repo_id, filename)`; raises `WeightsNotFoundError` when all fail."""
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
        # the cache read at call time (huggingface_hub < 0.23 fixed its default at import)
        return Path(hf_hub_download(repo_id=repo_id, filename=filename, local_files_only=local_files_only,
                                    cache_dir=hf_constants.HF_HUB_CACHE))
    except Exception as exc:  # offline, cache miss, missing repo/file, network error: all mean "not available"
        where = ', '.join(str(d) for d in dirs)
        raise WeightsNotFoundError(
            f"could not find {filename}: not in {where} and not available from the Hugging Face repository "
            f"{repo_id} ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}); "
            f"{_download_hint(filename, repo_id, dirs)}") from exc


def _unpickler_reason(exc: Exception) -> str:
    """The one informative line of torch's weights-only refusal ("Unsupported global: GLOBAL numpy...")."""
    text = str(exc)
    reason = text.split('WeightsUnpickler error:', 1)[-1].strip().split('\n')[0] if text else ''
    return reason.split(' was not an allowed global')[0] or (text.splitlines()[0] if text else 'no message')


def read_torch_file(path: str | os.PathLike, map_location: str | torch.device = 'cpu', mmap: bool = True):
    """`torch.load(weights_only=True)` of any weights file (memory-mapped when the format allows: tensors are read
    only when used), every failure one `CheckpointMismatchError` line: a truncated file, random bytes, a pickle
    holding more than tensors and plain containers (which could run code, so it is never unpickled)."""
    with open(path, 'rb') as fh:
        head = fh.read(4)
    is_zip = zipfile.is_zipfile(path)
    if not is_zip and head.startswith(b'PK'):
        raise CheckpointMismatchError(f"{path} cannot be read as a torch checkpoint: it is truncated (it starts "
                                      f"like one but its end is missing: a partial download or copy, or an "
                                      f"interrupted write?)")
    if not is_zip and not head.startswith(b'\x80'):
        raise CheckpointMismatchError(f"{path} is not a torch checkpoint (neither the zip format torch.save "
                                      f"writes nor its legacy pickle format)")
    try:
        # os.fspath: before torch 2.3, mmap=True takes a str filename only
        return torch.load(os.fspath(path), map_location=map_location, weights_only=True, mmap=mmap and is_zip)
    except pickle.UnpicklingError as exc:
        raise CheckpointMismatchError(
            f"{path} holds objects that torch.load(weights_only=True) refuses to unpickle ({_unpickler_reason(exc)}): "
            f"files may carry code, so only tensors and plain containers are read") from None
    except (RuntimeError, EOFError, OSError, ValueError, IndexError, KeyError) as exc:
        first = str(exc).split('. ')[0].splitlines()[0] if str(exc) else 'no message'
        raise CheckpointMismatchError(f"{path} cannot be read as a torch checkpoint: truncated or corrupt "
                                      f"({type(exc).__name__}: {first})") from None


def read_state_dict(path: str | os.PathLike, map_location: str | torch.device = 'cpu') -> dict[str, torch.Tensor]:
    """`torch.load(weights_only=True)` of a plain state dict (memory-mapped when the file format allows it)."""
    sd = read_torch_file(path, map_location)
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise CheckpointMismatchError(f"{path} is not a plain state dict of tensors (the official VAR files are)")
    return sd


def guess_var_depth(state_dict: dict[str, torch.Tensor]) -> str:
    """What a state dict looks like, for error messages: 'a depth-20 VAR (width 1280)', 'a VQVAE (ch=160)', ..."""
    block_ids = {int(m.group(1)) for k in state_dict for m in [re.match(r'blocks\.(\d+)\.', k)] if m}
    if block_ids:
        width = state_dict['pos_start'].shape[-1] if 'pos_start' in state_dict else None
        return f"a depth-{max(block_ids) + 1} VAR" + (f" (width {width})" if width is not None else '')
    if 'encoder.conv_in.weight' in state_dict:
        return f"a VQVAE with ch={state_dict['encoder.conv_in.weight'].shape[0]}"
    if any(k.startswith(('params', 'params_ema', 'net_g')) for k in state_dict) or any('cross_attn' in k for k in state_dict):
        return "a VarFormer/BasicSR checkpoint, not a VAR backbone file"
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
