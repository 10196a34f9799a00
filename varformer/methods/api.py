"""What a method is to the rest of the package: the ``MethodSpec`` it registers, the ``TrainTask`` each of its
training stages builds, and the small records they exchange. The trainer, the evaluator, the restorer, the
commands and the benchmarks see a method only through these (docs/extending.md shows a complete example).

    SPEC = MethodSpec(name="mynet", title="MyNet (a small CNN)", settings=MyNetSettings,
                      model_config=MyNetModelConfig, build=build_mynet, stages=(StageSpec("train", ...),),
                      restorer=lambda model: RestorerTraits(input_size=None), ...)

``name`` is also the ``format`` marker of the method's model files and the ``method:`` of its configs. A method
lives in one package and registers one spec (``varformer.methods.registry``: built in, or through the Python
entry-point group ``varformer.methods``).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import torch
from torch import nn

from varformer.errors import CheckpointMismatchError, ConfigError


# ---------------------------------------------------------------------------------------------------------------
# Training: the task a stage builds and what one step returns
# ---------------------------------------------------------------------------------------------------------------
@dataclass
class StepOutput:
    """What a task's forward returns for one batch."""
    loss: torch.Tensor                                    # the scalar that is back-propagated
    terms: Dict[str, torch.Tensor]                        # logged per term (weighted terms and plain metrics)
    visuals: Dict[str, torch.Tensor] = field(default_factory=dict)   # name -> (B,3,H,W) in [0,1], e.g. lq/out/gt
    extras: Dict[str, torch.Tensor] = field(default_factory=dict)    # per-step values the task plots (figures())


class TrainTask(nn.Module):
    """One training stage. ``model`` is the network being trained (what checkpoints and EMA hold); ``forward(batch)``
    computes the losses. Frozen parameters must have ``requires_grad=False`` before the trainer starts (DDP then
    leaves them out of its gradient buckets)."""

    model: nn.Module
    store_frozen_params: bool = False  # True when frozen weights come from a seed, not from a weight file

    def forward(self, batch) -> StepOutput:  # pragma: no cover - interface
        raise TypeError(f"{type(self).__name__} must define forward(batch) -> StepOutput")

    def batch_names(self, batch) -> List[str]:
        names = batch.get("name") if isinstance(batch, dict) else None
        return list(names) if names is not None else []

    def batch_size(self, batch) -> int:
        first = next(iter(batch.values())) if isinstance(batch, dict) else batch[0]
        return int(first.shape[0])

    def move_batch(self, batch, device: torch.device):
        nb = device.type == "cuda"
        if isinstance(batch, dict):
            return {k: (v.to(device, non_blocking=nb) if torch.is_tensor(v) else v) for k, v in batch.items()}
        return [v.to(device, non_blocking=nb) if torch.is_tensor(v) else v for v in batch]

    def validate(self, model: nn.Module, step: int) -> Dict[str, float]:
        """Validation metrics of ``model`` (the EMA weights are swapped in); rank 0 only. Default: none."""
        return {}

    def validation_visuals(self) -> Dict[str, torch.Tensor]:
        """Image columns from the last validation (for the TensorBoard grid); default: none."""
        return {}

    def parameter_groups(self) -> List[Dict[str, object]]:
        """The optimiser's parameter groups: dicts with ``name``, ``params`` and optionally ``lr_scale`` (the
        group's learning rate is ``train.lr`` times it; the schedule scales every group alike) and
        ``weight_decay``. Default: one group with every trainable parameter of the model."""
        return [{"name": "model", "params": [p for p in self.model.parameters() if p.requires_grad]}]

    def checkpointed_modules(self) -> List[nn.Module]:
        """The sub-modules whose activations are recomputed in backward under ``train.grad_checkpointing`` (the
        trainable parts that hold the memory); default: none."""
        return []

    def figures(self, out: StepOutput, step: int) -> Dict[str, Any]:
        """Matplotlib figures to log from a step's ``extras`` (on image steps, rank 0); default: none."""
        return {}

    def export(self, model: nn.Module, path: str) -> Optional[str]:
        """Write the final weights (EMA swapped in) as the method's model file at ``path`` + its extension;
        default: nothing."""
        return None


@dataclass
class InputsFound:
    """What a stage's checks found before anything was built: shown by ``--dry-run`` and at start."""
    weights: List[str] = field(default_factory=list)   # what each weight file is and where it was found
    notes: List[str] = field(default_factory=list)     # things that will happen at start (e.g. a download)


@dataclass(frozen=True)
class StageSpec:
    """One training stage of a method (``varformer train NAME``)."""
    name: str                                              # the command's stage name: stage1, stage2, distill, ...
    description: str                                       # one line for --help and the plan
    build_task: Callable[[Any, Callable[[str], None]], TrainTask]   # (config, announce) -> task, weights loaded
    check_inputs: Callable[[Any], InputsFound]             # weight files located, config values checked; no load
    training_data: Callable[[Any], Any]                    # config -> the training Dataset (files listed only)
    official_global_batch: int = 0                         # the release's images per optimiser step (0: unknown)
    official_layout: str = ""                              # how the release reached it, e.g. "16 per GPU x 4 GPUs"
    lr_scales_with_batch: bool = False                     # the release's lr rule: lr proportional to the batch
    released_size: Callable[[Any], bool] = lambda cfg: True   # whether a config trains the released model size
                                                           # (the official batch is the reference only then)
    configure: Callable[[Any], None] = lambda cfg: None    # the stage's own settings into the config, first thing
                                                           # (VarFormer: model.stage follows the command's stage)
    estimate_memory: Optional[Callable[[Any, int, str], Tuple[int, int, Dict[str, int]]]] = None
    # (config, micro-batch, precision) -> (state bytes, activation bytes per image, parameter counts): --dry-run
    recipe: str = ""                                       # the shipped config of the released recipe (a name in
                                                           # configs/, e.g. "stage2.yaml"; "": none ships)


# ---------------------------------------------------------------------------------------------------------------
# Inference and files
# ---------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class RestorerTraits:
    """How a model of the method is run on images (``varformer.inference.restorer``, ``inference.images``).

    A restorer maps (B, 3, H, W) to (B, 3, scale*H, scale*W). A super-resolver either upsamples inside its network
    (``upsample=None``: the network's output is ``scale`` times its input) or runs at the output resolution on the
    input upsampled first (``upsample``: the filter, e.g. ``lanczos``; its network maps a size to itself). A model
    with ``image_context`` gets, besides the pixels, one value per image computed once from the whole input as read
    (e.g. the features of a text prompt or caption): its module has ``image_context(x_3HW)`` and
    ``forward(x, contexts)``. A model with ``text_prompt`` takes ``set_prompt(text)`` (``restore --prompt``)."""
    input_size: Optional[int] = None    # a fixed square input: larger images are tiled at it (or resized, below)
    size_multiple: int = 1              # any-size models: inputs padded to a multiple of this
    resize_to_input: bool = False       # its papers resize every image to input_size (protocols may say otherwise)
    scale: int = 1                      # output size / input size (super-resolution)
    precision: Optional[str] = None     # the precision of its published evaluation (None: the device's default)
    upsample: Optional[str] = None      # pre-upsampling super-resolvers: the filter bringing inputs to the output size
    fit: str = "tile"                   # images of another size than input_size: "tile" (overlapping tiles) or
                                        # "resize" (resized to input_size and back), as the method's release does
    tile_overlap: Optional[int] = None  # its release's tile overlap in px at the network's resolution (None: 32)
    tile_window: str = "ramp"           # tile blending: "ramp" (ours) or "gaussian" (the SR releases' tilers)
    image_context: bool = False         # the model takes one value per image from the whole input (see above)
    text_prompt: bool = False           # the model takes a user prompt (``set_prompt``)


@dataclass
class ForeignFile:
    """A weights file a method recognises that is not one of its model files (its released checkpoint, a
    backbone file): ``kind`` is ``official`` or ``backbone``; ``detail`` says what it is in a phrase."""
    kind: str
    detail: str


@dataclass
class WeightsFile:
    """What a weights file is (``varformer.methods.registry.inspect_weights`` reads it once and fills this).

    ``kind``: ``model`` (a method's model file), ``training`` (a training checkpoint: ``step``, ``config``),
    ``official`` (a method's released file), ``backbone`` (a frozen backbone's file: VAR, VQVAE, VGG19, ...) or
    ``unknown``. ``method`` is the ``MethodSpec`` it belongs to (None for backbone and unknown files)."""
    path: str
    kind: str
    method: Optional["MethodSpec"] = None
    settings: Any = None                  # model / training: the method's settings of the model it holds
    content: Any = None                   # what was read (``checkpoints.OpenedWeights``; a training checkpoint's dict)
    step: Optional[int] = None            # training: the step it was written at
    config: Optional[Dict[str, Any]] = None   # training: the run's resolved config (a plain dict)
    detail: str = ""                      # official / backbone / unknown: what it is, in a phrase

    def describe(self) -> str:
        spec = self.method
        what = spec.describe(self.settings) if spec is not None and self.settings is not None else ""
        if self.kind == "model":
            return f"a {what} model file of this project"
        if self.kind == "training":
            return f"a {what} training checkpoint of this project (step {self.step})"
        if self.kind in ("official", "backbone"):
            return self.detail
        return f"not a weights file of any method here ({self.detail})"


@dataclass(frozen=True)
class Converter:
    """``varformer convert NAME SOURCE -o OUT``: a released file (or ours) into another layout."""
    name: str
    help: str
    add_arguments: Callable[[Any], None]          # argparse parser -> its options beyond SOURCE and -o
    run: Callable[[Any], List[str]]               # parsed args -> lines to print (the files written)
    writes_folder: bool = False                   # -o names a folder (several files) rather than one file
    folder_files: Tuple[str, ...] = ()            # writes_folder: the names it writes there (checked before it
                                                  # runs: an existing one is replaced only with --overwrite)


@dataclass(frozen=True)
class ReferencePath:
    """Another way to run the same model and weights (e.g. as the official test code runs it): ``benchmark model``
    times it beside the model, counts its FLOPs and reports the largest difference between the two outputs."""
    forward: Callable[..., torch.Tensor]                    # (float32 model, *inputs) -> the model's output
    applies: Callable[[Any], bool] = lambda settings: True  # settings -> whether it covers a model of them
    label: str = "reference"                                # its row in the tables
    description: str = ""                                   # one line: how it runs the model


@dataclass(frozen=True)
class BenchmarkSwitch:
    """A named change of how a model runs that its benchmark may measure (``benchmark model --switch NAME``)."""
    name: str
    help: str
    apply: Callable[[nn.Module], str]                       # float32 model -> a note for the report; before the
                                                            # per-precision copies are made


@dataclass(frozen=True)
class BenchmarkEntry:
    """``varformer benchmark model --method NAME``: the released-size model on random weights (``--set key=value``
    changes the released settings)."""
    released: Callable[[], Any]                             # the settings of the released model
    inputs: Callable[[Any, int, torch.device], tuple]       # (settings, batch, device) -> the forward's inputs
                                                            # (random; works under a fake-tensor mode)
    input_size: Callable[[Any], int]                        # settings -> the square input side
    parts: Tuple[str, ...] = ()                             # record_function ranges of the forward, in order
    part_labels: Tuple[str, ...] = ()                       # the tables' name of each part (default: its range)
    flop_groups: Tuple[Tuple[str, Tuple[str, ...]], ...] = ()
    # (label, module paths in the model, e.g. "vae.encoder"): FLOPs and parameters per group, counted by module
    # (disjoint modules, each called as a module); what no group holds goes under ``flop_rest``
    flop_rest: str = "rest"
    reference: Optional[ReferencePath] = None               # an official-style path to compare with
    switches: Tuple[BenchmarkSwitch, ...] = ()
    released_note: str = ""                                 # what the paper reports for the released size

    def label_of(self, part: str) -> str:
        labels = dict(zip(self.parts, self.part_labels))
        return labels.get(part, part)


@dataclass(frozen=True)
class DemoRecipe:
    """``varformer demo --method NAME``: shipped configs trained in order, then evaluated on the demo set.

    Each stage runs its config for the config's ``train.total_iters`` (seeded: the same table on every machine);
    ``varformer demo --steps`` gives other lengths, ``--train-minutes`` a wall-clock budget split by
    ``time_split``. The last stage's export is the demo's restorer. A method without training stages yet gives
    ``untrained``: its small random-init model, evaluated as it is (``summary`` says what that shows)."""
    stages: Tuple[Tuple[str, str], ...]                     # (stage name, shipped config) in training order
    carry: Callable[[str, str], List[str]]                  # (stage name, previous stage's export) -> overrides
    summary: str = ""                                       # what the demo's numbers can and cannot show (printed
                                                            # after the table and on the demo's page)
    model: str = ""                                         # the demo model in a sentence (logged before training)
    time_split: Tuple[float, ...] = ()                      # shares of a --train-minutes budget, one per stage
                                                            # (empty: equal shares)
    untrained: Optional[Callable[[], nn.Module]] = None     # no stages: () -> the demo's model (eval mode), shown
                                                            # as it is (the pipeline running, not restoration)
    scale: Optional[int] = None                             # a super-resolver's scale on the demo's same-size
                                                            # pairs (1), for ``inference.with_scale``

    def shares(self) -> Tuple[float, ...]:
        """The share of a wall-clock budget each stage trains for (they sum to 1)."""
        if not self.time_split:
            return tuple(1.0 / len(self.stages) for _ in self.stages)
        if len(self.time_split) != len(self.stages) or min(self.time_split) <= 0:
            raise ConfigError(f"a demo recipe's time_split needs one share > 0 per stage ({len(self.stages)}), got "
                              f"{self.time_split}")
        total = sum(self.time_split)
        return tuple(s / total for s in self.time_split)


# ---------------------------------------------------------------------------------------------------------------
# Reproducing the method's paper: the main table, the analysis figures, the ablation table
# ---------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ReleasedFile:
    """One file of a release on the Hugging Face hub (fetched through ``huggingface_hub``, or found locally)."""
    repo_id: str
    filename: str
    what: str                                   # "VAR's VQVAE tokenizer", shown in plans and errors


@dataclass(frozen=True)
class PaperSpec:
    """``varformer reproduce paper --method NAME``: the released files -> one converted model file (cached by the
    SHA-256 of ``source``) -> the published table's benchmarks under the paper's protocol(s)."""
    files: Tuple[ReleasedFile, ...]
    source: str                                 # the file name among ``files`` that is converted (the cache key)
    convert: Callable[[Dict[str, Any]], Tuple[nn.Module, str]]   # {file name: path} -> (model, conversion summary)
    check_backbone: Callable[[nn.Module, Dict[str, Any]], Dict[str, Any]]   # converted model vs the release's
    describe_check: Callable[[Dict[str, Any]], str]                        # ... what that check found, one line
    table: str                                  # its table in resources/published.yaml
    protocols: Tuple[str, ...]                  # the protocols it may be evaluated under; the first is the default


@dataclass(frozen=True)
class AnalysisSpec:
    """``varformer analyze NAME --weights W --root DATA``: one analysis figure of the method's paper. The command
    parses the common options (weights, root, benchmarks, max_images, output_dir, device, batch_size), checks the
    ``optional`` modules before any compute (one line each when missing), then calls ``run``."""
    name: str
    help: str                                   # one line: what it computes
    figure: str                                 # the paper figure it reproduces (docs/analysis.md says more)
    run: Callable[[Any, "WeightsFile"], List[str]]   # (parsed args, the weights file) -> lines to print
    add_arguments: Callable[[Any], None] = lambda parser: None   # its own options
    optional: Tuple[Tuple[str, str], ...] = ()  # (module, what is done without it), e.g. ("sklearn", "PCA ...")


@dataclass(frozen=True)
class AblationRow:
    """One row of the paper's ablation table: a shipped recipe, the published value it sits beside."""
    name: str                                   # <recipe_dir>/<name>.yaml; ``--rows NAME``
    label: str
    overrides: Tuple[str, ...]                  # config overrides that make the row (also on the small recipes)
    published: float                            # the paper's value for this row
    exact: bool                                 # False: approximate ("~")
    reference: str                              # where the value comes from and what model it measured
    reference_settings: Tuple[Tuple[str, Any], ...] = ()   # ``model.*`` of that model where known: a Δ needs
    #                                                          the trained recipe to have the same
    first_stage: bool = True                    # starts from the first stage's model


@dataclass(frozen=True)
class AblationSpec:
    """``varformer reproduce ablations``: every row trained by the shared trainer and evaluated by the shared
    evaluator (full size: ``<recipe_dir>/<row>.yaml``; ``--small``: the ``small`` demo recipes + the row's
    overrides)."""
    rows: Tuple[AblationRow, ...]
    stage: str                                  # the training stage of every row
    recipe_dir: str                             # shipped configs folder, relative to the recipes
    first_stage: Tuple[str, str]                # (stage, shipped recipe) trained first when no weights are given
    carry: Callable[[str], List[str]]           # first stage's weights -> the overrides of a row starting there
    benchmarks: Tuple[str, ...]                 # full size: the sets averaged into the row's value
    protocol: str                               # ... evaluated under this protocol
    column: str                                 # what the value is, e.g. "Deraining PSNR (dB)"
    small: Tuple[Tuple[str, str], ...]          # --small: (stage, shipped demo recipe) for the first stage, the rows
    describe_recipe: Callable[[Any], str]       # a row's config -> "VAR d20, 6 cross-attention blocks, ..."
    trainable: Callable[[nn.Module], int]       # parameters the row trained (a model from its export)
    source: str                                 # where the published values come from

    def row(self, name: str) -> AblationRow:
        for r in self.rows:
            if r.name == name:
                return r
        raise ConfigError(f"unknown ablation row '{name}' (rows: {', '.join(r.name for r in self.rows)})")


# ---------------------------------------------------------------------------------------------------------------
# The method
# ---------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class MethodSpec:
    name: str                                   # registry key = model-file format marker = config ``method``
    title: str                                  # "VarFormer (Wang et al., CVPR 2025)"
    settings: type                              # constructor args = checkpoint metadata (to_metadata/from_metadata)
    model_config: type                          # the config's ``model:`` section (settings + weight sources)
    build: Callable[[Any], nn.Module]           # settings -> model (random init; works under the meta device)
    stages: Tuple[StageSpec, ...]
    restorer: Callable[[nn.Module], RestorerTraits]
    load_model: Callable[[WeightsFile], nn.Module]   # a file of this method -> a restorer model (eval mode)
    loss_config: Optional[type] = None          # ``train.loss:`` (None: the method has no loss knobs)
    demo_config: Optional[type] = None          # ``demo:`` (None: the generic demo knobs)
    describe: Callable[[Any], str] = lambda settings: ""       # settings -> "depth 16, width 160, ..."
    architecture_of: Callable[[Mapping[str, torch.Tensor]], Dict[str, Any]] = lambda sd: {}
    recognize: Callable[[Any], Optional[ForeignFile]] = lambda obj: None  # loaded file content -> its kind
    converters: Tuple[Converter, ...] = ()
    benchmark: Optional[BenchmarkEntry] = None
    demo: Optional[DemoRecipe] = None
    default_protocol: str = "full"              # the evaluation protocol of its paper
    default_weights: str = ""                   # the converted release's usual path, for hints
    release: str = ""                           # where the released weights are and how to convert them (hints)
    training_list: Optional[Callable[[str], List[str]]] = None   # an authors' JSON training list -> what it implies
                                                # for the method's recipes (lines: `varformer data check LIST.json`)
    package: str = ""                           # the method's own package (the no-names-outside test)
    paper: Optional[PaperSpec] = None           # varformer reproduce paper --method NAME
    analyses: Tuple[AnalysisSpec, ...] = ()     # varformer analyze NAME
    ablations: Optional[AblationSpec] = None    # varformer reproduce ablations --method NAME

    def stage(self, name: str) -> StageSpec:
        for s in self.stages:
            if s.name == name:
                return s
        if not self.stages:
            raise ConfigError(f"{self.title} has no training stage here (yet): its models come from its release "
                              f"({self.release or 'see its docs'})")
        raise ConfigError(f"{self.title} has no training stage '{name}'; its stages: "
                          + ", ".join(f"{s.name} ({s.description})" for s in self.stages))

    def stage_names(self) -> Tuple[str, ...]:
        return tuple(s.name for s in self.stages)

    def analysis(self, name: str) -> AnalysisSpec:
        for a in self.analyses:
            if a.name == name:
                return a
        have = ", ".join(a.name for a in self.analyses) or "none"
        raise ConfigError(f"{self.title} has no analysis '{name}' (its analyses: {have})")


class SettingsMetadata:
    """What a checkpoint records about a settings dataclass that lists its recorded fields in ``NAMES`` and checks
    itself in ``validate()``: ``from_metadata`` (unknown names and invalid values are one line naming the file)
    and ``replace``. ``TITLE`` names the method in messages."""

    NAMES: Tuple[str, ...] = ()
    TITLE: str = "model"

    @classmethod
    def from_metadata(cls, meta: Mapping[str, object], source: str = "checkpoint"):
        unknown = sorted(set(meta) - set(cls.NAMES))
        if unknown:
            raise CheckpointMismatchError(f"{source}: unknown {cls.TITLE} settings {unknown} "
                                          f"(known: {', '.join(cls.NAMES)})")
        try:
            return cls(**dict(meta)).validate()
        except (ConfigError, TypeError) as e:
            raise CheckpointMismatchError(f"{source}: {e}") from None

    def replace(self, **changes):
        return dataclasses.replace(self, **changes).validate()


def settings_from_section(settings_cls: type, section) -> Any:
    """The settings part of a config section (a config dataclass extends its method's settings dataclass)."""
    names = [f.name for f in dataclasses.fields(settings_cls)]
    values = {}
    for n in names:
        v = getattr(section, n)
        values[n] = list(v) if isinstance(v, Sequence) and not isinstance(v, str) else v
    obj = settings_cls(**values)
    return obj.validate() if hasattr(obj, "validate") else obj


@dataclass
class DemoKnobs:
    """The ``demo:`` section every method has (a method's ``demo_config`` may extend it): knobs for minutes-long
    CPU runs on the demo set; the defaults are the official behaviour (docs/demo.md)."""
    task_order: str = "random"          # "random" (official) or "cycle": sample k gets task k mod n, ids unshuffled


@dataclass
class NoLossKnobs:
    """``train.loss:`` of a method without loss settings."""
