"""The study's typed configuration: one frozen dataclass per params.yaml section.

:meth:`Params.from_dict` reads the whole params.yaml strictly (:mod:`pvqae.strict_config`):
an unknown key anywhere is an error naming it, its section and the closest valid key, raised
by ``python -m pvqae run`` before any stage starts. The defaults below are the committed
default profile's values (a test keeps them equal to params.yaml). The configs of a model
live beside it: :class:`pvqae.model.ModelConfig`, :class:`pvqae.scoring.ScoreConfig`,
:class:`pvqae.prior.PriorConfig` and each baseline's in ``pvqae.baselines``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import field

from pvqae.baselines.ae_ssim import AESSIMConfig
from pvqae.baselines.patch_ae import PatchAEConfig
from pvqae.baselines.vq_flow import VQFlowConfig
from pvqae.entropy import EntropyConfig
from pvqae.features import InputConfig
from pvqae.model import ModelConfig
from pvqae.prior import PriorConfig
from pvqae.scoring import ScoreConfig
from pvqae.strict_config import Config, ConfigError, suggest


@dataclasses.dataclass(frozen=True)
class SyntheticConfig(Config):
    """The generated default dataset (MVTec layout)."""

    SECTION = "data.synthetic"
    classes: tuple[str, ...] = ("texture", "surface", "printed")
    defects: tuple[str, ...] = ("scratch", "crack", "stain", "missing")
    n_train: int = 64  # per class
    n_test_good: int = 12  # per class
    n_test_defect: int = 4  # per class and defect kind
    image_size: int | None = None  # generated size; None = data.image_size


@dataclasses.dataclass(frozen=True)
class DataConfig(Config):
    """Which images, at which size, and the held-out normal split."""

    SECTION = "data"
    dataset: str = "synthetic"  # synthetic | mvtec | btad | mtsd | folder
    source: str = "pvqae/data/synthetic.py"  # dataset folder (for synthetic: the generator)
    classes: tuple[str, ...] | None = None  # None = every class found
    train_list: str | None = None  # MTSD: the published DifferNet training list
    image_size: int = 64
    channels: int = 3  # grey images are replicated when 3
    patch_size: int = 8  # coarse routing patch in px (paper: 32 at 256 px)
    val_fraction: float = 0.1  # normal training images held out for selection
    entropy: EntropyConfig = field(default_factory=EntropyConfig)
    synthetic: SyntheticConfig = field(default_factory=SyntheticConfig)

    @property
    def coarse_grid(self) -> int:
        """Side of the coarse patch grid: image_size / patch_size (paper: 256 / 32 = 8)."""
        if self.image_size % self.patch_size:
            raise ConfigError(f"data.image_size {self.image_size} is not a multiple of data.patch_size "
                              f"{self.patch_size}")
        return self.image_size // self.patch_size


@dataclasses.dataclass(frozen=True)
class PretrainConfig(Config):
    """VQ-GAN pre-training with random routing (Sec. III-A, IV-A); budget learning and the
    static VQ reuse every setting they do not set themselves."""

    SECTION = "pretrain"
    steps: int = 150
    batch_size: int = 16
    lr: float = 4e-4
    betas: tuple[float, float] = (0.5, 0.9)  # VQ-GAN's Adam betas
    grad_clip: float = 1.0  # global norm; 0 = off
    l1_weight: float = 1.0
    l2_weight: float = 0.0
    ssim_weight: float = 0.2  # stands in for LPIPS (no pretrained VGG offline)
    perceptual_weight: float = 0.0  # LPIPS-like term on frozen EfficientNet-Lite0 (pvqae.perceptual); 0 = off
    perceptual_strides: tuple[int, ...] = (4, 8, 16)  # its endpoints
    vq_weight: float = 1.0
    disc_weight: float = 0.1  # adversarial term; 0 = no discriminator
    disc_start: int = 100  # step at which the adversarial term switches on
    disc_ch: int = 32
    disc_layers: int = 2
    routing: str = "random"  # random level per coarse patch: trains all three codebooks
    augment_jitter: float = 0.1  # flip + brightness/contrast jitter (Sec. IV-A)
    # UniAD's input noise, std = this x the position's RMS (pvqae.batches.feature_jitter), in every
    # autoencoder training (pre-training, budget learning, static VQ); 0 = off
    feature_jitter: float = 0.0
    ckpt_every: int = 200  # resume checkpoint interval in steps
    log_every: int = 20
    autocast: str = "bf16"  # none | bf16: mixed precision of forward + loss on CUDA only (the CPU stays float32)
    tf32: bool = True  # TF32 tensor cores for float32 matmuls / convolutions on CUDA only

    def __post_init__(self):
        if self.autocast not in ("none", "bf16"):
            raise ConfigError(f"{self.SECTION}.autocast must be 'none' or 'bf16', got {self.autocast!r}")
        if self.feature_jitter < 0:
            raise ConfigError(f"{self.SECTION}.feature_jitter must be >= 0 (0 = off), got {self.feature_jitter}")

    def for_budget(self, budget: "BudgetConfig") -> "PretrainConfig":
        """The autoencoder settings of budget learning: these, with its own steps, lr,
        discriminator start and routing."""
        return self.replace(steps=budget.steps, lr=budget.lr, disc_start=budget.disc_start, routing=budget.routing)


@dataclasses.dataclass(frozen=True)
class StaticVQConfig(Config):
    """The VQ-E-style static single-resolution VQ baseline (pretrain settings otherwise)."""

    SECTION = "static_vq"
    level: int = 1  # 0 coarse, 1 median, 2 fine
    steps: int = 210  # = pretrain.steps + budget.steps: the same training budget


BUDGET_ROUTINGS = ("dynamic", "coarse", "median", "fine")  # LEVEL_NAMES after "dynamic"


@dataclasses.dataclass(frozen=True)
class BudgetConfig(Config):
    """Progressive budget learning (Sec. III-B): routing, Gumbel temperature and budget loss."""

    SECTION = "budget"
    steps: int = 60
    lr: float = 2e-4
    router_lr: float = 3e-3  # the routing MLP learns faster than the autoencoder; 0 = lr
    routing: str = "dynamic"  # dynamic (PVQAE) | coarse | median | fine: fixed, the same-network static VQ
    disc_start: int = 0
    lambda_max: float = 1.25  # Fig. 5's optimum
    lambda_schedule: str = "linear"  # linear | cosine | constant (Table II)
    lambda_warmup: int = 0  # steps at lambda = 0 before the ramp
    budget_factor: float = 4.0  # cost rises by this factor per finer level
    budget_eps: float = 0.1  # base cost = 1 / (H + eps)
    budget_scale: float = 1e-3  # cost magnitude vs. the reconstruction loss (not in the paper)
    budget_reduction: str = "mean"  # mean over patches | sum (the paper's literal form)
    tau: float = 1.0  # Gumbel-softmax temperature, annealed exponentially ...
    tau_min: float = 0.5  # ... to this over the stage; = tau disables annealing

    def __post_init__(self):
        if self.routing not in BUDGET_ROUTINGS:
            raise ConfigError(f"budget.routing must be one of {', '.join(BUDGET_ROUTINGS)}, got {self.routing!r}")

    @property
    def fixed_level(self) -> int | None:
        """The level of a fixed routing (the same-network static VQ), None for dynamic."""
        return None if self.routing == "dynamic" else BUDGET_ROUTINGS.index(self.routing) - 1

    def tau_at(self, step: int) -> float:
        if self.tau_min >= self.tau or self.steps <= 1:
            return self.tau
        return self.tau * (self.tau_min / self.tau) ** (step / (self.steps - 1))


@dataclasses.dataclass(frozen=True)
class EvaluateConfig(Config):
    """Scoring and metrics of every method alike."""

    SECTION = "evaluate"
    batch_size: int = 16
    fpr_limit: float = 0.3  # AUPRO integration limit
    score: ScoreConfig = field(default_factory=ScoreConfig)


@dataclasses.dataclass(frozen=True)
class MedianFilterConfig(Config):
    SECTION = "baselines.median_filter"
    kernel: int = 9  # median window in px


@dataclasses.dataclass(frozen=True)
class PatchCoreConfig(Config):
    """Roth et al. 2022 on the study's backbone."""

    SECTION = "baselines.patchcore"
    strides: tuple[int, ...] = (8, 16)  # WRN50 layer2 + layer3
    coreset_ratio: float = 0.1
    projection_dim: int = 128  # random projection of the greedy coreset search
    feature_dim: int | None = 1024  # adaptive average pooling of the concatenated features


@dataclasses.dataclass(frozen=True)
class PaDiMConfig(Config):
    """Defard et al. 2021 on the study's backbone."""

    SECTION = "baselines.padim"
    strides: tuple[int, ...] = (4, 8, 16)  # WRN50 layer1-3
    dims: int | None = None  # random channel subset; None = all


@dataclasses.dataclass(frozen=True)
class BaselinesConfig(Config):
    """Table I baselines: same data, splits, resolution and metrics as PVQAE."""

    SECTION = "baselines"
    methods: tuple[str, ...] = ("median_filter", "ae_ssim", "patchcore", "padim", "patch_ae", "vq_flow")
    backbone: str = "efficientnet-lite0"  # efficientnet-lite0|1|2 | wide_resnet50_2
    backbone_weights: str | None = None  # a .pth; None = the weights package (or torch hub for WRN50)
    download_weights: bool = False  # wide_resnet50_2 only: torch.hub downloads (needs a network)
    median_filter: MedianFilterConfig = field(default_factory=MedianFilterConfig)
    ae_ssim: AESSIMConfig = field(default_factory=AESSIMConfig)
    patchcore: PatchCoreConfig = field(default_factory=PatchCoreConfig)
    padim: PaDiMConfig = field(default_factory=PaDiMConfig)
    patch_ae: PatchAEConfig = field(default_factory=PatchAEConfig)
    vq_flow: VQFlowConfig = field(default_factory=VQFlowConfig)

    def __post_init__(self):
        from pvqae.baselines import METHODS

        bad = [m for m in self.methods if m not in METHODS]
        if bad:
            raise ConfigError(f"baselines.methods: unknown method {bad[0]!r};{suggest(bad[0], METHODS)}")


@dataclasses.dataclass(frozen=True)
class AblationsConfig(Config):
    """The settings of Tables II-III and Fig. 5."""

    SECTION = "ablations"
    priors: tuple[str, ...] = ("none", "universal", "per-class")  # Table III
    lambda_schedules: tuple[str, ...] = ("constant", "cosine", "linear")  # Table II
    lambda_max: tuple[float, ...] = (0.5, 1.25, 2.0)  # Fig. 5 (linear schedule)
    static_levels: tuple[str, ...] = ("coarse", "median", "fine")  # same-network static VQ: routing fixed

    def __post_init__(self):
        bad = [x for x in self.static_levels if x not in BUDGET_ROUTINGS[1:]]
        if bad:
            raise ConfigError(f"ablations.static_levels: {bad[0]!r} is not one of {', '.join(BUDGET_ROUTINGS[1:])}")


@dataclasses.dataclass(frozen=True)
class FiguresConfig(Config):
    SECTION = "figures"
    samples_per_class: int = 3


@dataclasses.dataclass(frozen=True)
class BudgetedConfig(Config):
    """Time-budgeted runs of PVQAE and the static VQ (:mod:`pvqae.benchmark.budgeted`: the GPU
    study and the CPU scaling study); no pipeline stage reads it. Step counts follow from the
    measured steps per second, so every schedule (lambda ramp, Gumbel temperature,
    discriminator start) runs whole, compressed to the budget."""

    SECTION = "budgeted"
    seconds: float = 180.0  # training wall clock per model: PVQAE pre-training + budget learning; the static VQ alike
    pretrain_share: float = 0.667  # PVQAE's share for pre-training (the paper's 20000 of 20000 + 10000 steps)
    prior_seconds: float = 30.0  # the Budget Prior Transformer's own budget
    calibration_steps: int = 10  # steps timed (after 3 untimed) to plan how many fit the budget
    seed: int = 0  # training seed of the run

    def __post_init__(self):
        if self.seconds <= 0 or self.prior_seconds <= 0 or not 0 < self.pretrain_share < 1:
            raise ConfigError("budgeted: seconds and prior_seconds must be > 0 and pretrain_share in (0, 1)")
        if self.calibration_steps < 1:
            raise ConfigError("budgeted.calibration_steps must be >= 1")


NOT_PARAMS = ("image_size", "in_channels", "levels", "fixed_level")  # model keys set by data and the method


@dataclasses.dataclass(frozen=True)
class Params(Config):
    """The whole params.yaml."""

    SECTION = ""  # the top level
    profile: str = "default"  # the size profile last applied
    seed: int = 0  # data seed: the synthetic set and the held-out split
    seeds: tuple[int, ...] = (0,)  # training seeds: tables show mean ± std over them
    data: DataConfig = field(default_factory=DataConfig)
    input: InputConfig = field(default_factory=InputConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    pretrain: PretrainConfig = field(default_factory=PretrainConfig)
    static_vq: StaticVQConfig = field(default_factory=StaticVQConfig)
    budget: BudgetConfig = field(default_factory=BudgetConfig)
    prior: PriorConfig = field(default_factory=PriorConfig)
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)
    baselines: BaselinesConfig = field(default_factory=BaselinesConfig)
    ablations: AblationsConfig = field(default_factory=AblationsConfig)
    figures: FiguresConfig = field(default_factory=FiguresConfig)
    budgeted: BudgetedConfig = field(default_factory=BudgetedConfig)

    @classmethod
    def from_dict(cls, d, section=None, *, forbid=()):
        """Strict read of params.yaml (or of the sections a stage gets). The ``model`` section
        may not set image_size / in_channels / levels: they follow ``data`` and the method."""
        d = dict(d or {})
        has_both = "model" in d and "data" in d  # a stage may get only some sections
        model = d.pop("model", None)
        out = super().from_dict(d, section)
        model = ModelConfig.from_dict(model, "model", forbid=NOT_PARAMS)
        out = out.replace(model=model.replace(image_size=out.data.image_size, in_channels=out.data.channels))
        if not out.seeds or len(set(out.seeds)) != len(out.seeds):
            raise ConfigError(f"seeds: must be a non-empty list of distinct integers, got {list(out.seeds)}")
        if out.input.kind == "features":
            stride = out.input.strides[0]
            grid = out.data.image_size // stride
            if out.data.image_size % stride or grid % 2 ** (len(out.input.ch_mult) - 1):
                raise ConfigError(f"input: data.image_size {out.data.image_size} / stride {stride} must be a whole grid "
                                  f"divisible by {2 ** (len(out.input.ch_mult) - 1)} (input.ch_mult has "
                                  f"{len(out.input.ch_mult)} levels); e.g. 256 px with strides [8, 16]")
        elif has_both and out.model.grids[0] != out.data.coarse_grid:
            raise ConfigError(f"model.ch_mult has {len(out.model.ch_mult)} levels, giving a coarse grid of "
                              f"{out.model.grids[0]} at {out.data.image_size} px, but data.patch_size "
                              f"{out.data.patch_size} gives {out.data.coarse_grid}; set data.patch_size to "
                              f"{out.data.image_size // out.model.grids[0]}")
        return out

    def model_config(self, levels: tuple[int, ...] = (0, 1, 2), input_shape: tuple[int, int] | None = None
                     ) -> ModelConfig:
        """The PVQAE architecture (all three levels) or the static VQ's (one level). For
        ``input.kind: features`` (PVQAE-F) the autoencoder reads a (channels, grid) feature
        map, ``input_shape``, with the ``input`` section's widths."""
        if self.input.kind == "pixels":
            return self.model.replace(levels=tuple(levels))
        if input_shape is None:
            raise ValueError("a feature autoencoder needs input_shape = (channels, grid) of the cached features")
        i = self.input
        return self.model.replace(levels=tuple(levels), in_channels=int(input_shape[0]), image_size=int(input_shape[1]),
                                  ch=i.ch, ch_mult=i.ch_mult, embed_dim=i.embed_dim, num_codes=i.num_codes)
