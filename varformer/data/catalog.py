"""Registry of the test sets we read, and where each one's files are under a root (layouts as distributed).

A benchmark is recognised by the folder that holds it: the trailing folder names (case, ``-``, ``_`` and spaces
ignored) must match one of its ``folders`` suffixes, e.g. ``.../test/Rain100H`` or ``.../SOTS/outdoor``; inside
that folder one of its LQ/GT sub-folder pairs must exist (``input/target``, ``input/groundtruth``, ``hazy/gt``,
``low/high``, ``rainy/gt``, per-sequence ``GOPRxxxx/blur`` + ``sharp``, SIDD's two ``.mat`` files, or a folder of
clean images for the Gaussian-noise sets). ``locate(name, root)`` also accepts ``root`` being that folder itself.
Layouts: docs/evaluation.md, "Data layouts".
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

from varformer.data.demo_set import DEMO_TASKS, DemoSpec
from varformer.data.image_io import is_image_file
from varformer.data.sidd import GT_FILE as SIDD_GT_FILE, NOISY_FILE as SIDD_NOISY_FILE
from varformer.errors import DataError

TASKS = ("rain", "haze", "blur", "lowlight", "noise", "realnoise", "snow", "udc", "mixed", "sr")
MAX_SEARCH_DEPTH = 6

_PAIRS_DERAIN = (("input", "target"), ("rainy", "gt"), ("input", "gt"), ("rain", "norain"), ("data", "gt"))
_PAIRS_GENERIC = (("input", "target"), ("input", "groundtruth"), ("input", "gt"), ("lq", "gt"))
_PAIRS_SR = (("lq", "gt"), ("test_LR", "test_HR"), ("LR", "HR"), ("input", "target"))
_STABLESR_NOTE = ("a StableSR test set (Hugging Face Iceclear/StableSR-TestSets): 512x512 GT crops with their "
                  "128x128 LQ; that VARestorer's table uses these sets is unverified (its evaluation data was not "
                  "released; consistent with its fixed 512 pipeline), and the folder names are not checked on a copy")


def normalise(name: str) -> str:
    return re.sub(r"[\s_\-]", "", name.lower())


@dataclass(frozen=True)
class Benchmark:
    name: str
    task: str
    kind: str                                  # "paired" | "sequences" | "clean" | "sidd"
    folders: Tuple[Tuple[str, ...], ...]       # normalised trailing folder names that identify it
    pairs: Tuple[Tuple[str, str], ...] = _PAIRS_GENERIC  # LQ/GT sub-folders, first found wins
    rules: Tuple[str, ...] = ("stem",)         # pairing rules (varformer.data.pairing)
    expected: Optional[int] = None             # pair count of the standard release (None: not established)
    sigma: Optional[float] = None              # Gaussian-noise sets: noise level on the 0-255 scale
    clean_dirs: Tuple[str, ...] = ()           # clean-image sets: sub-folders tried in order ("" = the folder)
    size_policy: str = "error"                 # LQ/GT size mismatch: "error" | "center-crop-gt"
    layout: str = ""                           # human description of the expected layout (for error messages)
    note: str = ""
    default_root: Optional[str] = None         # root used when none is given (a named source: varformer.data.roots)
    nested: bool = False                       # LQ/GT folders hold one folder per video: <lq>/<video>/<frame>
    member_pairs: Tuple[Tuple[str, str], ...] = (("blur", "sharp"), ("blur_gamma", "sharp"))  # "sequences": per member
    members: Tuple[str, ...] = ()              # "sequences": only these member folders (normalised); () = any
    scale: int = 1                             # super-resolution sets: GT side / LQ side

    @property
    def expected_layout(self) -> str:
        return self.layout


def _derain(name: str, folder: str, expected: int, extra: str = "") -> Benchmark:
    layout = (f"test/{folder}/{{input,target}} (Restormer/MPRNet/DiffUIR archive{extra}), "
              f"or {folder}/{{rainy,gt}} with rain-N/norain-N names (AirNet family)")
    return Benchmark(name, "rain", "paired", ((normalise(name),),), _PAIRS_DERAIN, ("stem", "rain-norain"),
                     expected, layout=layout)


def _gauss(base: str, folders, clean_dirs, expected: int, sigma: int, layout: str) -> Benchmark:
    return Benchmark(f"{base}-s{sigma}", "noise", "clean", folders, (), (), expected, float(sigma), clean_dirs,
                     layout=layout + f"; Gaussian noise sigma={sigma}/255 is added on the fly with a fixed seed per image")


BENCHMARKS: Dict[str, Benchmark] = {b.name: b for b in [
    _derain("rain100h", "Rain100H", 100),
    _derain("rain100l", "Rain100L", 100),
    _derain("test100", "Test100", 100, "; VarFormer: derain/test/Test100"),
    _derain("test1200", "Test1200", 1200),
    _derain("test2800", "Test2800", 2800),
    Benchmark("sots-outdoor", "haze", "paired",
              (("sots", "outdoor"), ("sotsoutdoor",), ("test", "dehaze"), ("dehaze", "sots")),
              (("hazy", "gt"), ("hazy", "clear"), ("input", "target"), ("hazy", "GT")), ("stem", "haze-prefix"), 500,
              layout="SOTS/outdoor/{hazy,gt} with 0001_0.8_0.2.jpg -> 0001.png (VarFormer/DiffUIR), "
                     "or test/dehaze/{input,target} (AirNet/PromptIR/AdaIR)",
              note="users report 500 or 492 pairs depending on the copy"),
    Benchmark("sots-indoor", "haze", "paired", (("sots", "indoor"), ("sotsindoor",)),
              (("hazy", "gt"), ("hazy", "clear"), ("input", "target")), ("stem", "haze-prefix"), 500,
              size_policy="center-crop-gt",
              layout="SOTS/indoor/{hazy,gt} with 1400_1.png -> 1400.png",
              note="indoor hazy images can be smaller than the GT (620x460 vs 640x480): the GT is centre-cropped"),
    Benchmark("gopro", "blur", "sequences",
              (("gopro", "test"), ("test", "gopro"), ("goprolarge", "test"), ("deblur", "gopro")),
              (("input", "target"), ("input", "groundtruth"), ("blur", "sharp"), ("blurgamma", "sharp")),
              ("stem", "sequence-frame"), 1111,
              layout="test/GoPro/{input,target} (Restormer), GoPro/test/{input,groundtruth} (VarFormer), "
                     "or GOPRO_Large/test/GOPRxxxx_xx_xx/{blur,sharp}/ (original per-sequence release)",
              note="per-sequence release: the linear 'blur' folder is used (not 'blur_gamma')"),
    Benchmark("hide", "blur", "paired", (("hide",),), (("input", "target"), ("input", "groundtruth")), ("stem",),
              2025, layout="test/HIDE/{input,target}"),
    Benchmark("realblur-j", "blur", "paired", (("realblurj",),), (("input", "target"),), ("stem",), None,
              layout="test/RealBlur_J/{input,target}"),
    Benchmark("realblur-r", "blur", "paired", (("realblurr",),), (("input", "target"),), ("stem",), None,
              layout="test/RealBlur_R/{input,target}"),
    Benchmark("lol", "lowlight", "paired",
              (("eval15",), ("lol", "test"), ("lolv1", "test"), ("enhance", "lol"), ("lol", "eval15")),
              (("low", "high"), ("input", "target"), ("low", "gt")), ("stem",), 15,
              layout="LOLdataset/eval15/{low,high} (LOL v1), or test/enhance/lol/{input,target} (AdaIR)"),
    Benchmark("sidd-val", "realnoise", "sidd", (("sidd", "val"), ("sidd", "validation"), ("siddval",), ("sidd",)),
              (("input", "target"), ("input", "groundtruth"), ("noisy", "gt")), ("stem",), 1280,
              layout=f"a folder with {SIDD_NOISY_FILE} + {SIDD_GT_FILE} (40 images x 32 blocks), "
                     "or SIDD/val/{input,target} PNG blocks (VarFormer config)"),
    Benchmark("urban100-pregen-s50", "noise", "paired", (("urban100050",),), (("input", "target"),), ("stem",), 100,
              sigma=50.0, layout="denoise/urban100_0_50/{input,target} (VarFormer test.yml; noisy inputs pre-made)"),
    # RestoreVAR's Table 1 sets not above (its own test lists, test_jsons/*.json, are read by varformer.data.json_list)
    *[Benchmark(f"snow100k-{s}", "snow", "paired", ((f"snow100k{s}",),),
                (("synthetic", "gt"), ("input", "target"), ("snow", "gt")), ("stem",), None,
                layout=f"Snow100K-testset/Snow100K-{s.upper()}/{{synthetic,gt}} (the Snow100K release), "
                       f"or Snow100K-{s.upper()}/{{input,target}}",
                note="each test split holds about 16k pairs (exact count not established here); which split "
                     "RestoreVAR's Snow100k list holds is unknown (its test JSON was not seen)")
      for s in ("s", "m", "l")],
    Benchmark("rain13k-test", "rain", "sequences",
              (("rain13k", "test"), ("syntheticraindatasets", "test"), ("deraining", "datasets", "test")),
              (("rain", "gt"), ("input", "target")), ("stem", "sequence-frame"), 4300,
              member_pairs=(("input", "target"), ("rainy", "gt")),
              members=("rain100h", "rain100l", "test100", "test1200", "test2800"),
              layout="the five Rain13K test sets together: test/{Rain100H,Rain100L,Test100,Test1200,Test2800}/"
                     "{input,target} (MPRNet/Restormer archive), or one flattened Rain13K/Test/{Rain,GT}",
              note="4,300 = 100 + 100 + 100 + 1,200 + 2,800, one mean over all images; whether RestoreVAR's Rain13K "
                   "list is this union is unknown (its test JSON was not seen)"),
    # RestoreVAR's Table 2 sets (real-world generalisation; scored with no-reference metrics only)
    Benchmark("lhp", "rain", "paired", (("lhp",), ("lhprain",), ("lhprain", "test")),
              (("input", "target"), ("rain", "gt"), ("input", "gt"), ("rainy", "gt")), ("stem",), None,
              layout="LHP(-Rain)/{input,target} or {rain,gt}",
              note="LHP-Rain (ICCV 2023) real rain; the test split RestoreVAR lists, its layout and count are unknown"),
    Benchmark("revide", "haze", "paired", (("revide", "test"), ("revide",)), (("hazy", "gt"), ("input", "target")),
              ("stem",), None, nested=True, layout="REVIDE/Test/{hazy,gt}/<video>/<frame>.JPG (video folders)",
              note="REVIDE real indoor haze (videos); count unknown; RestoreVAR saves results as <video>_<frame>"),
    *[Benchmark(d, "udc", "paired", ((d,), (d, "test"), (d, "val")),
                (("lq", "hq"), ("input", "target"), ("input", "gt"), ("degraded", "gt")), ("stem",), None,
                layout=f"{d.upper()}/{{lq,hq}} or {{input,target}} PNG pairs",
                note=f"under-display camera ({'transparent' if d == 'toled' else 'pentile'} OLED); which split "
                     "RestoreVAR lists and its count are unknown; the UDC release's .mat arrays are not read: export "
                     "the pairs to PNG")
      for d in ("toled", "poled")],
    Benchmark("lolblur", "mixed", "paired", (("lolblur", "test"), ("lolblur",)),
              (("low_blur", "high_sharp_scaled"), ("low_blur_noise", "high_sharp_scaled"), ("input", "target")),
              ("stem",), None, nested=True,
              layout="LOL-Blur/test/{low_blur,high_sharp_scaled}/<video>/<frame>.png (LEDNet release)",
              note="low light + blur; LEDNet's README gives 30 test videos of 60 frames, not checked on a copy; "
                   "RestoreVAR stores these results as JPEG quality 95"),
    Benchmark("cdd", "mixed", "paired", (("cdd11test",), ("cdd11", "test"), ("cdd",)),
              (("haze_rain", "clear"), ("input", "target")), ("stem",), None,
              layout="CDD-11_test/{haze_rain,clear} (OneRestore's composite set: the haze + rain subset)",
              note="count unknown; RestoreVAR stores these results as JPEG quality 95"),
    # x4 real-world super-resolution (VARestorer's table; StableSR's test sets)
    Benchmark("div2k-val", "sr", "paired", (("div2kval",), ("div2kv2val",), ("div2k", "val")), _PAIRS_SR,
              ("stem", "sr-suffix"), 3000, scale=4, layout="DIV2K_V2_val/{lq,gt} (StableSR test sets; 3,000 pairs)",
              note="synthetic: " + _STABLESR_NOTE),
    Benchmark("drealsr", "sr", "paired", (("drealsr",), ("drealsrval",), ("drealsrvalcrop128",)), _PAIRS_SR,
              ("stem", "sr-suffix"), 93, scale=4,
              layout="DrealSRVal_crop128/{test_LR,test_HR} (StableSR test sets; 93 pairs)",
              note="real (DRealSR): " + _STABLESR_NOTE),
    Benchmark("realsr", "sr", "paired", (("realsr",), ("realsrval",), ("realsrvalcrop128",)), _PAIRS_SR,
              ("stem", "sr-suffix"), 100, scale=4,
              layout="RealSRVal_crop128/{test_LR,test_HR} (StableSR test sets; 100 pairs)",
              note="real (RealSR v3): " + _STABLESR_NOTE),
    Benchmark("sice", "lowlight", "paired", (("sice",), ("sice", "test")),
              (("low", "high"), ("input", "target"), ("input", "gt")), ("stem",), None,
              layout="SICE/{low,high} or {input,target}",
              note="in RestoreVAR's first Table 2 (arXiv v1) only; which SICE images it used is unknown"),
] + [_gauss("cbsd68", (("cbsd68",), ("bsd68",), ("denoise", "bsd68")),
            ("original_png", "original", "target", "gt", "clean", ""), 68, s,
            "CBSD68/original_png (clausmichele/CBSD68-dataset), test/denoise/bsd68/ (AdaIR) or CBSD68/*.png")
     for s in (15, 25, 50)]
  + [_gauss("kodak24", (("kodak24",), ("kodak",)), ("original", "target", "gt", "clean", ""), 24, s,
            "Kodak24/kodimNN.png or test/denoise/kodak24/") for s in (15, 25, 50)]
  + [_gauss("urban100", (("urban100",),), ("HR", "original", "target", "gt", "clean", ""), 100, s,
            "Urban100/img_001.png or Urban100/HR/") for s in (15, 25, 50)]
  + [_gauss("mcmaster", (("mcmaster",), ("mcmaster18",)), ("original", "target", "gt", "clean", ""), 18, s,
            "McMaster/*.tif") for s in (15, 25, 50)]
  # the built-in demo set's test split (scikit-image photographs, our degradations): root "demo" by default
  + [Benchmark(f"demo-{t}", t, "paired", (("test", t),), (("input", "target"),), ("stem",),
               DemoSpec().test_images(), layout="<demo>/test/<task>/{input,target}",
               note="built-in demo set (scikit-image photographs)", default_root="demo") for t in DEMO_TASKS]}


def demo_benchmarks() -> List[str]:
    """The names of the demo set's test benchmarks, one per demo task."""
    return [name for name, b in BENCHMARKS.items() if b.default_root == "demo"]


def expand_names(items: Sequence[str]) -> List[str]:
    """Benchmark names with ``demo`` expanded to every ``demo-<task>``."""
    out: List[str] = []
    for item in items:
        out += demo_benchmarks() if item.lower() == "demo" else [item]
    return out

_ALIASES = {"sots": "sots-outdoor", "sidd": "sidd-val", "lolv1": "lol", "lol-v1": "lol", "gopro-test": "gopro"}


def get_benchmark(name: str) -> Benchmark:
    key = name.lower()
    key = _ALIASES.get(key, key)
    if key.startswith("bsd68-"):
        key = "c" + key
    if key in BENCHMARKS:
        return BENCHMARKS[key]
    by_norm = {normalise(k): k for k in BENCHMARKS}
    if normalise(key) in by_norm:
        return BENCHMARKS[by_norm[normalise(key)]]
    raise DataError(f"unknown benchmark '{name}'. Known: {', '.join(BENCHMARKS)}")


# ---------------------------------------------------------------------------------------------------------------
# Layout resolution
# ---------------------------------------------------------------------------------------------------------------
@dataclass
class Located:
    """Where one benchmark's files are; ``lq``/``gt`` are relative paths (keys) under ``lq_dir``/``gt_dir``."""
    benchmark: Benchmark
    folder: str
    layout: str                                # e.g. "input/target", "sequences blur/sharp", "sidd .mat", "clean:original"
    lq_dir: str = ""
    gt_dir: str = ""
    lq: List[str] = field(default_factory=list)
    gt: List[str] = field(default_factory=list)


def list_images(folder: str) -> List[str]:
    return sorted(f for f in os.listdir(folder) if is_image_file(f) and os.path.isfile(os.path.join(folder, f)))


def list_nested_images(folder: str) -> List[str]:
    """``<video>/<frame>`` paths one folder down (plus any images directly in ``folder``)."""
    out = list_images(folder)
    for d in sorted(os.listdir(folder)):
        if os.path.isdir(os.path.join(folder, d)) and not d.startswith("."):
            out += [f"{d}/{f}" for f in list_images(os.path.join(folder, d))]
    return out


def _subdir(folder: str, name: str) -> Optional[str]:
    """Case/underscore-insensitive sub-folder lookup (``GT`` vs ``gt``, ``blur_gamma`` vs ``blurgamma``)."""
    if not os.path.isdir(folder):
        return None
    want = normalise(name)
    for entry in sorted(os.listdir(folder)):
        if normalise(entry) == want and os.path.isdir(os.path.join(folder, entry)):
            return os.path.join(folder, entry)
    return None


def resolve_folder(bench: Benchmark, folder: str) -> Optional[Located]:
    """The benchmark's layout inside ``folder``, or None if none of its layouts is there."""
    if bench.kind == "sidd" and all(os.path.isfile(os.path.join(folder, f)) for f in (SIDD_NOISY_FILE, SIDD_GT_FILE)):
        return Located(bench, folder, "sidd .mat", folder, folder)
    if bench.kind == "sidd" and normalise(os.path.basename(os.path.abspath(folder))) == "sidd":
        return None  # a bare "SIDD" folder counts only with the .mat files (its input/target may be training crops)
    if bench.kind == "clean":
        for sub in bench.clean_dirs:
            d = _subdir(folder, sub) if sub else folder
            if d and list_images(d):
                files = list_images(d)
                return Located(bench, folder, f"clean:{sub or '.'}", d, d, files, files)
        return None
    lister = list_nested_images if bench.nested else list_images
    for lq_sub, gt_sub in bench.pairs:
        lq_d, gt_d = _subdir(folder, lq_sub), _subdir(folder, gt_sub)
        if lq_d and gt_d:
            return Located(bench, folder, f"{os.path.basename(lq_d)}/{os.path.basename(gt_d)}", lq_d, gt_d,
                           lister(lq_d), lister(gt_d))
    if bench.kind == "sequences":
        seqs = sorted(d for d in os.listdir(folder) if os.path.isdir(os.path.join(folder, d))
                      and (not bench.members or normalise(d) in bench.members))
        for lq_sub, gt_sub in bench.member_pairs:
            lq, gt = [], []
            for s in seqs:
                lq_d, gt_d = _subdir(os.path.join(folder, s), lq_sub), _subdir(os.path.join(folder, s), gt_sub)
                if lq_d and gt_d:
                    lq += [f"{s}/{os.path.basename(lq_d)}/{f}" for f in list_images(lq_d)]
                    gt += [f"{s}/{os.path.basename(gt_d)}/{f}" for f in list_images(gt_d)]
            if lq or gt:
                return Located(bench, folder, f"sequences {lq_sub}/{gt_sub}", folder, folder, lq, gt)
    return None


def _walk_dirs(root: str, max_depth: int = MAX_SEARCH_DEPTH) -> Iterator[str]:
    root = os.path.abspath(root)
    yield root
    base_depth = root.rstrip(os.sep).count(os.sep)
    for dirpath, dirnames, _ in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        if dirpath.count(os.sep) - base_depth >= max_depth:
            dirnames[:] = []
            continue
        for d in dirnames:
            yield os.path.join(dirpath, d)


def _matches(folder: str, suffixes: Sequence[Tuple[str, ...]]) -> bool:
    parts = [normalise(p) for p in os.path.abspath(folder).split(os.sep) if p]
    return any(tuple(parts[-len(s):]) == s for s in suffixes if len(parts) >= len(s))


def find_all(root: str, names: Optional[Sequence[str]] = None) -> List[Located]:
    """Every known benchmark found under ``root`` (``names``: restrict to these), in registry order. Without
    ``names`` the demo benchmarks are looked for only in a demo set's own folder (it holds ``manifest.json``)."""
    if names:
        benches = [get_benchmark(n) for n in names]
    else:
        is_demo = os.path.isfile(os.path.join(root, "manifest.json"))
        benches = [b for b in BENCHMARKS.values() if b.default_root != "demo" or is_demo]
    dirs = list(_walk_dirs(root))
    found = []
    for b in benches:
        for d in dirs:
            if _matches(d, b.folders):
                loc = resolve_folder(b, d)
                if loc is not None:
                    found.append(loc)
    return found


def locate(name: str, root: str) -> Located:
    """The benchmark's files under ``root`` (root may be the benchmark's own folder); ``DataError`` if absent."""
    bench = get_benchmark(name)
    if not os.path.isdir(root):
        raise DataError(f"benchmark root not found: {root} (for {bench.name} expected a layout like: {bench.layout})")
    direct = resolve_folder(bench, os.path.abspath(root))
    if direct is not None:
        return direct
    found = find_all(root, [bench.name])
    if not found:
        raise DataError(f"{bench.name}: no folder with its layout under {root}. Expected: {bench.layout}")
    if len(found) > 1:
        where = ", ".join(f.folder for f in found)
        raise DataError(f"{bench.name}: several copies under {root} ({where}); pass the one to use as the root")
    return found[0]
