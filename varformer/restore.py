"""Restore images of any size and number: ``varformer restore INPUT... -o OUT``.

Inputs are files, folders (their images, top level, sorted by name) and glob patterns. Every image is read as RGB
(grayscale, palette, alpha and 16-bit files are converted, with a note; EXIF orientation is applied so phone photos
come out upright), restored with overlapping, window-blended tiles (``varformer.inference.tiling``; tiles of consecutive
images share batches) and written as an 8-bit PNG with the input's name (``photo.jpg`` -> ``OUT/photo.png``).
Each output is written atomically (temporary file, then rename) as soon as its last tile is done, so an
interrupted run leaves only complete files and ``--skip-existing`` resumes it. Unreadable files (a corrupt header,
a decompression bomb: a header claiming more pixels than Pillow decodes) are reported and skipped; the run goes
on. Before anything is restored (``plan_restore``) the inputs are listed and the output checked: a folder (not
``-o result.png``), not one the inputs come from, writable; every output name is decided first, unique
(case-insensitively) among all of them, so the count of written files is the count of files on disk; an existing
output is replaced only if an earlier ``varformer restore`` wrote it (its PNG says so: ``Software`` text chunk),
else only with ``--overwrite``.

The restorer is a ``varformer.inference.Restorer`` (``load_restorer``: a weights file of any method, or
``identity`` for a pipeline check without a model); images meet its network as its method's release runs them
(``varformer.inference.images``: tiles or a resize, a super-resolver's pre-upsampling, per-image contexts).
"""
from __future__ import annotations

import glob
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from varformer.data.image_io import IMAGE_EXTENSIONS, image_size, read_image, tensor_to_uint8, to_tensor, write_image
from varformer.errors import DataError, OutputError
from varformer.inference import Restorer
from varformer.inference.images import calls_needed, image_run, restore_stream


SOFTWARE = "varformer restore"   # the PNG text chunk that marks an output as this command's


# ---------------------------------------------------------------------------------------------------------------
# Inputs and outputs
# ---------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Job:
    src: Path
    out: Path


def _is_image_name(p: Path) -> bool:
    return p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith(".")


def collect_inputs(inputs: Sequence[str]) -> List[Path]:
    """Files (taken as given), folders (their image files, top level, sorted) and globs (image files, sorted)."""
    found: List[Path] = []
    for spec in inputs:
        p = Path(spec).expanduser()
        if p.is_dir():
            imgs = sorted(q for q in p.iterdir() if q.is_file() and _is_image_name(q))
            if not imgs:
                raise DataError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) in folder {p}")
            found.extend(imgs)
        elif p.is_file():
            found.append(p)
        elif glob.has_magic(spec):
            imgs = sorted(Path(q) for q in glob.glob(os.path.expanduser(spec), recursive=True)
                          if Path(q).is_file() and _is_image_name(Path(q)))
            if not imgs:
                raise DataError(f"no images match {spec!r}")
            found.extend(imgs)
        else:
            raise DataError(f"input not found: {spec} (not a file, a folder or a glob pattern that matches)")
    unique = list(dict.fromkeys(q.resolve() for q in found))  # same file named twice is restored once
    return unique


def plan_jobs(sources: Sequence[Path], out_dir: Path) -> Tuple[List[Job], List[str]]:
    """Output ``OUT/<stem>.png`` per input, every name decided before anything is written: inputs that share a
    stem (``a.jpg`` and ``a.png``) get their extension in the name (``a_jpg.png``), and a name still taken (by
    ``a_jpg.jpg``'s own ``a_jpg.png``, or in another letter case) a number (``a_jpg_2.png``)."""
    out_dir = Path(out_dir)
    stems: dict = {}
    for s in sources:
        stems.setdefault(s.stem.casefold(), []).append(s)
    plain = {s: s.stem + ".png" for s in sources if len(stems[s.stem.casefold()]) == 1}
    taken = {name.casefold() for name in plain.values()}
    jobs, notes = [], []
    for s in sources:
        name = plain.get(s)
        if name is None:  # shares its stem with another input
            base = f"{s.stem}_{s.suffix.lstrip('.').lower() or 'noext'}"
            name, n = base + ".png", 1
            while name.casefold() in taken:
                n += 1
                name = f"{base}_{n}.png"
            taken.add(name.casefold())
            notes.append(f"{s}: name shared with another input, written as {name}")
        jobs.append(Job(s, out_dir / name))
    inputs = {s.resolve() for s in sources}
    clash = [j for j in jobs if j.out.resolve() in inputs]
    if clash:
        raise DataError(f"output would overwrite its input: {clash[0].out}; choose another output folder (-o)")
    return jobs, notes


def check_output_folder(out_dir: Path, sources: Sequence[Path]) -> None:
    """Refuse an output that is not a writable folder of its own, before anything is restored: a file name
    (``-o result.png``), a folder that holds inputs (the next run would restore its own outputs), a folder that
    cannot be created or written."""
    out_dir = Path(out_dir)
    if out_dir.is_file() or (not out_dir.exists() and out_dir.suffix.lower() in IMAGE_EXTENSIONS):
        raise DataError(f"-o {out_dir} names a file; -o takes a folder (outputs keep the input names: "
                        f"photo.jpg -> OUT/photo.png), e.g. -o {out_dir.parent / 'restored'}")
    parents = {s.resolve().parent for s in sources}
    if out_dir.resolve() in parents:
        raise DataError(f"-o {out_dir} is a folder the inputs come from: the outputs would join the inputs (and the "
                        f"next run over that folder would restore them again); choose another output folder")
    probe = out_dir / f".varformer-write-test.{os.getpid()}"
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise DataError(f"cannot write into the output folder {out_dir}: {e.strerror or e}") from None


def written_by_restore(path: Path) -> bool:
    """Whether ``path`` is a PNG an earlier ``varformer restore`` wrote (its ``Software`` text chunk)."""
    try:
        with Image.open(path) as im:
            return im.format == "PNG" and im.info.get("Software") == SOFTWARE
    except Exception:  # any file Pillow cannot open as an image is not one of ours
        return False


def check_existing_outputs(jobs: Sequence[Job], overwrite: bool = False, skip_existing: bool = False) -> List[str]:
    """Existing outputs: kept (``skip_existing``), replaced if an earlier restore wrote them or with ``overwrite``
    (a note each), else refused in one line before anything is restored."""
    notes, foreign = [], []
    for j in jobs:
        if not os.path.lexists(j.out) or skip_existing:
            continue
        if j.out.is_dir():
            raise OutputError(f"{j.out} is a folder where the output of {j.src.name} goes; choose another -o")
        if written_by_restore(j.out):
            notes.append(f"{j.out} (an earlier restore's output) is replaced by the restored {j.src.name} "
                         "(--skip-existing keeps existing outputs)")
        elif overwrite:
            notes.append(f"{j.out} is replaced by the restored {j.src.name} (--overwrite)")
        else:
            foreign.append(j.out)
    if foreign:
        more = f" and {len(foreign) - 1} more" if len(foreign) > 1 else ""
        raise OutputError(f"{foreign[0]}{more} already exist(s) and were not written by varformer restore: pass "
                          f"--overwrite to replace them, --skip-existing to keep them, or choose another -o")
    return notes


def plan_restore(inputs: Sequence[str], out_dir: str, overwrite: bool = False,
                 skip_existing: bool = False) -> Tuple[List[Job], List[str]]:
    """Inputs, output names, existing outputs and the output folder checked: what ``varformer restore`` does
    before it loads a model."""
    sources = collect_inputs(inputs)
    check_output_folder(Path(out_dir), sources)
    jobs, notes = plan_jobs(sources, Path(out_dir))
    return jobs, notes + check_existing_outputs(jobs, overwrite, skip_existing)


_EXIF_ORIENTATION = 0x0112


def apply_exif_orientation(img_HW3: np.ndarray, path: Path) -> Tuple[np.ndarray, Optional[str]]:
    """Rotate/flip pixels as the EXIF orientation tag says (phone photos), like Pillow's ``exif_transpose``."""
    try:
        with Image.open(path) as im:
            orientation = int(im.getexif().get(_EXIF_ORIENTATION, 1))
    except Exception:  # a broken EXIF block is not worth failing the image for
        return img_HW3, None
    ops = {2: lambda a: a[:, ::-1], 3: lambda a: a[::-1, ::-1], 4: lambda a: a[::-1],
           5: lambda a: a.transpose(1, 0, 2), 6: lambda a: np.rot90(a, -1), 7: lambda a: a[::-1, ::-1].transpose(1, 0, 2),
           8: lambda a: np.rot90(a, 1)}
    if orientation not in ops:
        return img_HW3, None
    return np.ascontiguousarray(ops[orientation](img_HW3)), f"EXIF orientation {orientation} applied"


def load_input(path: Path) -> Tuple[torch.Tensor, List[str]]:
    """(3, H, W) float32 in [0, 1] and the conversion notes; ``DataError`` if unreadable."""
    arr, note = read_image(str(path))
    arr, orient_note = apply_exif_orientation(arr, path)
    return to_tensor(arr), [n for n in (note, orient_note) if n]


def write_png_atomic(path: Path, img_HW3_uint8: np.ndarray) -> None:
    """Through a temporary, renamed into place (readers never see a partial PNG); the PNG says it was written
    here (``Software``), so a later run knows it may replace it."""
    write_image(path, img_HW3_uint8, text={"Software": SOFTWARE})


# ---------------------------------------------------------------------------------------------------------------
# The run
# ---------------------------------------------------------------------------------------------------------------
@dataclass
class RestoreReport:
    written: List[Path] = field(default_factory=list)
    skipped: List[Path] = field(default_factory=list)          # outputs that already existed (--skip-existing)
    failed: List[Tuple[Path, str]] = field(default_factory=list)
    notes: List[str] = field(default_factory=list)

    def summary(self) -> str:
        return (f"{len(self.written)} written, {len(self.skipped)} skipped (output exists), "
                f"{len(self.failed)} failed")


def restore_paths(inputs: Sequence[str], out_dir: str, restorer: Union[Restorer, Callable], *,
                  tile: Optional[int] = None, overlap: Optional[int] = None, batch_size: int = 4,
                  fit: Optional[str] = None, skip_existing: bool = False, overwrite: bool = False,
                  device: Optional[torch.device] = None, progress: bool = True,
                  log: Callable[[str], None] = lambda m: print(m, file=sys.stderr)) -> RestoreReport:
    """Restore every input image into ``out_dir``; returns what was written, skipped and why files failed.
    ``tile`` (any-size restorers; default 256), ``overlap``, ``fit``: the method's defaults unless given."""
    if not isinstance(restorer, Restorer):  # a plain callable on (B, 3, H, W): an any-size restorer
        restorer = Restorer(getattr(restorer, "__name__", "restorer"), restorer, device=device or torch.device("cpu"))
    run = image_run(restorer, fit=fit, tile=tile, overlap=overlap, batch_size=batch_size)
    device = device or getattr(restorer, "device", torch.device("cpu"))
    report = RestoreReport()
    jobs, report.notes = plan_restore(inputs, out_dir, overwrite, skip_existing)
    todo: List[Tuple[Job, int]] = []
    for j in jobs:
        if skip_existing and j.out.exists():
            report.skipped.append(j.out)
            continue
        try:
            h, w = image_size(str(j.src))
        except DataError as e:
            report.failed.append((j.src, str(e)))
            continue
        todo.append((j, calls_needed(restorer, h, w, run)))

    bar = tqdm(total=sum(n for _, n in todo), unit="tile", disable=not progress, file=sys.stderr,
               desc=f"restoring {len(todo)} image(s)")

    def source() -> Iterator[Tuple[Job, torch.Tensor]]:
        for j, n_tiles in todo:
            try:
                x_3HW, notes = load_input(j.src)
            except DataError as e:
                report.failed.append((j.src, str(e)))
                bar.update(n_tiles)
                continue
            report.notes.extend(f"{j.src}: {n}" for n in notes)
            yield j, x_3HW.to(device)

    try:
        for j, y_3HW in restore_stream(restorer, source(), run, on_batch=bar.update):
            try:
                write_png_atomic(j.out, tensor_to_uint8(y_3HW))
            except OSError as e:
                report.failed.append((j.src, f"cannot write {j.out}: {e}"))
                continue
            report.written.append(j.out)
    except BaseException as e:
        why = "interrupted" if isinstance(e, KeyboardInterrupt) else "stopped by an error"
        log(f"restore {why} after {len(report.written)} output(s) were written completely; "
            f"rerun with --skip-existing to continue")
        raise
    finally:
        bar.close()
    for n in report.notes:
        log(f"note: {n}")
    for src, why in report.failed:
        log(f"failed: {why}")
    return report
