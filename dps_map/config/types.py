"""Types and ranges of every scalar config key, checked at start-up (config.validate) so a wrongly
typed value (`seed=abc`, `sampler.respacing=abc`) or an impossible one (`num_samples=0`,
`task.sigma_y=nan`) stops with one line before any model is built.

A key is looked up by its dotted path (`tuned.*.zeta` is checked as `sampler.zeta`); `paths.*`, list values
(but a pair on a key whose spec takes one, `task.drop_ratio=[0.3,0.7]`) and the keys check_keys already
restricts (`kind`, `operator`, `method`, `noise`) are not listed here.
"""

from __future__ import annotations

import math
import re

from ..errors import ConfigError

BIG = 10**9  # counts above this are typos (or would never finish)


class Kind:
    """A value checker: `problem(value)` is None if the value is fine, else what was expected."""

    nullable = False

    def problem(self, value) -> str | None:
        if value is None:
            return None if self.nullable else self.expected()
        return None if self.ok(value) else self.expected()

    def ok(self, value) -> bool:  # pragma: no cover - overridden
        raise NotImplementedError

    def expected(self) -> str:  # pragma: no cover - overridden
        raise NotImplementedError


class Int(Kind):
    def __init__(self, lo=None, hi=BIG, nullable=False, also=()):
        self.lo, self.hi, self.nullable, self.also = lo, hi, nullable, tuple(also)

    def ok(self, v):
        return (isinstance(v, int) and not isinstance(v, bool) and (self.lo is None or v >= self.lo)
                and (self.hi is None or v <= self.hi)) or (not isinstance(v, bool) and v in self.also)

    def expected(self):
        rng = [f">= {self.lo}" if self.lo is not None else "", f"<= {self.hi}" if self.hi is not None else ""]
        text = "an integer " + " and ".join(r for r in rng if r)
        text += "".join(f" or {a}" for a in self.also) + (" or null" if self.nullable else "")
        return text


class Float(Kind):
    """A finite number in a range; pair=True also takes a pair [lo, hi] of them with lo <= hi (a range a value is
    drawn from, e.g. task.drop_ratio)."""

    def __init__(self, lo=None, hi=None, lo_open=False, hi_open=False, nullable=False, pair=False):
        self.lo, self.hi, self.lo_open, self.hi_open, self.nullable = lo, hi, lo_open, hi_open, nullable
        self.pair = pair

    def ok(self, v):
        if self.pair and isinstance(v, (list, tuple)):
            return len(v) == 2 and all(self.ok_number(u) for u in v) and v[0] <= v[1]
        return self.ok_number(v)

    def ok_number(self, v):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            return False
        if self.lo is not None and (v <= self.lo if self.lo_open else v < self.lo):
            return False
        return self.hi is None or (v < self.hi if self.hi_open else v <= self.hi)

    def expected(self):
        lo = "" if self.lo is None else f"{'>' if self.lo_open else '>='} {self.lo}"
        hi = "" if self.hi is None else f"{'<' if self.hi_open else '<='} {self.hi}"
        text = "a finite number " + " and ".join(r for r in (lo, hi) if r)
        text += " or a pair [lo, hi] of them with lo <= hi" if self.pair else ""
        return text + (" or null" if self.nullable else "")


class Bool(Kind):
    def ok(self, v):
        return isinstance(v, bool)

    def expected(self):
        return "true or false"


class Choice(Kind):
    def __init__(self, *choices, nullable=False):
        self.choices, self.nullable = choices, nullable

    def ok(self, v):
        return isinstance(v, str) and v in self.choices

    def expected(self):
        return "one of " + ", ".join(self.choices) + (" or null" if self.nullable else "")


class Str(Kind):
    def __init__(self, pattern=None, what="a string", nullable=False):
        self.pattern, self.what, self.nullable = pattern, what, nullable

    def ok(self, v):
        return isinstance(v, str) and (self.pattern is None or re.fullmatch(self.pattern, v) is not None)

    def expected(self):
        return self.what + (" or null" if self.nullable else "")


class Respacing(Kind):
    """A respacing string (checked against the prior's diffusion_steps in check_types)."""

    def ok(self, v):
        return isinstance(v, (str, int)) and not isinstance(v, bool)

    def expected(self):
        return 'a respacing string such as "50", "ddim50" or "10,10,10"'


class IntList(Kind):
    """Comma-separated non-negative integers ("32,16,8"), or one of them as an int (attention_resolutions=8)."""

    def ok(self, v):
        return (isinstance(v, int) and not isinstance(v, bool) and v >= 0) or \
            (isinstance(v, str) and re.fullmatch(r"\d+(,\d+)*", v) is not None)

    def expected(self):
        return 'comma-separated integers such as "32,16,8", or one integer'


COUNT = Int(1)
INT_LIST = IntList()
VARIANCE = Choice("fixed_small", "fixed_large", "learned_range")

SPEC: dict[str, Kind] = {
    # top level
    "seed": Int(0, 2**63 - 1), "num_samples": Int(1, 10**6), "batch_size": Int(1, 10**6, nullable=True),
    "measurement_batch": Int(1, 10**4),
    "device": Str(r"auto|cpu|cuda(:\d+)?|mps", "auto, cpu, cuda or cuda:N"), "overwrite": Bool(), "progress": Bool(),
    # task
    "task.name": Str(), "task.sigma_y": Float(0),
    "task.poisson_rate": Float(0, lo_open=True),
    "task.factor": Int(1, 4096), "task.method": Choice("bicubic", "imresize", "avgpool"),
    "task.box_fraction": Float(),  # its range is checked with the image size in config.validate
    "task.location": Choice("random", "center"),
    "task.drop_ratio": Float(0, 1, hi_open=True, pair=True), "task.kernel_size": Int(1, 8191),
    "task.blur_sigma": Float(0, lo_open=True), "task.intensity": Float(0, 1),
    "task.m": Int(1, 10**5), "task.min_modes": Int(1, 10**4), "task.min_weight": Float(0, 1, hi_open=True),
    # prior
    "prior.name": Str(), "prior.checkpoint": Str(nullable=True), "prior.what": Str(), "prior.url": Str(),
    "prior.override": Str(), "prior.random_init": Bool(),
    "prior.noise_schedule": Choice("linear", "cosine", "scaled_linear"),
    "prior.diffusion_steps": Int(1, 10**5), "prior.respacing": Respacing(), "prior.variance": VARIANCE,
    "prior.class_label": Int(0, 999, nullable=True, also=("random", "data")),
    "prior.instance_seed": Int(0, 2**63 - 1), "prior.dim": Int(1, 10**5), "prior.num_components": Int(1, 10**5),
    "prior.grid_scale": Float(0, lo_open=True), "prior.cov_std": Float(0, lo_open=True),
    "prior.cov_type": Choice("isotropic", "diagonal", "full"), "prior.weights": Choice("uniform", "random"),
    "prior.unet.image_size": Int(8, 4096), "prior.unet.large_size": Int(8, 4096), "prior.unet.small_size": Int(2, 4096),
    "prior.unet.num_channels": Int(1, 8192), "prior.unet.num_res_blocks": Int(1, 64),
    "prior.unet.channel_mult": Str(r"(\d+(,\d+)*)?", 'comma-separated integers such as "1,2,2" (or "" for the default)'),
    "prior.unet.attention_resolutions": INT_LIST, "prior.unet.num_heads": Int(1, 1024),
    "prior.unet.num_head_channels": Int(1, 8192, also=(-1,)), "prior.unet.num_heads_upsample": Int(1, 1024, also=(-1,)),
    "prior.unet.learn_sigma": Bool(), "prior.unet.class_cond": Bool(), "prior.unet.use_scale_shift_norm": Bool(),
    "prior.unet.resblock_updown": Bool(), "prior.unet.use_checkpoint": Bool(), "prior.unet.use_fp16": Bool(),
    "prior.unet.use_new_attention_order": Bool(), "prior.unet.dropout": Float(0, 1, hi_open=True),
    # latent priors (priors/latent.py: diffusers UNet2DConditionModel, AutoencoderKL, CLIP text encoder)
    "prior.source": Choice("random", "folder"), "prior.seed": Int(0, 2**63 - 1), "prior.path": Str(),
    "prior.embedding_cache": Str(nullable=True), "prior.image_size": Int(8, 4096),
    "prior.beta_start": Float(0, 1, lo_open=True, hi_open=True), "prior.beta_end": Float(0, 1, lo_open=True, hi_open=True),
    "prior.prediction_type": Choice("epsilon", "v_prediction", nullable=True),
    "prior.unet.sample_size": Int(1, 4096), "prior.unet.in_channels": Int(1, 64), "prior.unet.out_channels": Int(1, 64),
    "prior.unet.layers_per_block": Int(1, 64), "prior.unet.cross_attention_dim": Int(1, 8192),
    "prior.unet.attention_head_dim": Int(1, 8192), "prior.unet.norm_num_groups": Int(1, 1024),
    "prior.vae.in_channels": Int(1, 64), "prior.vae.out_channels": Int(1, 64), "prior.vae.latent_channels": Int(1, 64),
    "prior.vae.layers_per_block": Int(1, 64), "prior.vae.norm_num_groups": Int(1, 1024),
    "prior.vae.sample_size": Int(1, 4096), "prior.vae.scaling_factor": Float(0, 100, lo_open=True),
    "prior.text_encoder.*": Int(1, 10**6),
    # sampler
    "sampler.name": Str(), "sampler.respacing": Respacing(), "sampler.variance": VARIANCE, "sampler.clip_x0": Bool(),
    "sampler.start": Float(0, 1, lo_open=True), "sampler.zeta": Float(0), "sampler.w": Float(0, 1),
    "sampler.num_inner": Int(0, 10**4), "sampler.optimizer": Choice("sgd", "adam"), "sampler.project": Bool(),
    "sampler.transition": Choice("ddpm", "ddim"), "sampler.eta": Float(0, 1), "sampler.adapter": Str(nullable=True),
    "prior.adapter": Str(nullable=True),
    "sampler.gamma": Float(0), "sampler.repeat": Int(1, 10**3), "sampler.travel_start": Float(0, 1),
    "sampler.travel_end": Float(0, 1),
    "sampler.guidance_units": Choice("vp", "euler"),
    "sampler.gluing": Choice("adjoint", "transpose"), "sampler.encoding": Choice("mean", "sample"),
    "sampler.noise_on_prediction": Bool(), "sampler.renoise": Choice("forward", "xu"),
    "sampler.rho": Choice("constant", "adaptive"),
    # data
    "data.name": Str(), "data.per_photo": Int(1, 10**4), "data.num_shards": Int(1, 10**6), "data.shard": Int(0, 10**6),
    "data.path": Str(), "data.max_images": Int(1, nullable=True), "data.labels": Str(nullable=True),
    # metrics, logger, perf
    "metrics.name": Str(), "metrics.lpips_net": Choice("alex", "vgg"), "metrics.kid_subsets": Int(1, 10**6),
    "metrics.kid_subset_size": Int(1, 10**6), "metrics.random_weights": Bool(),
    "logger.name": Str(), "logger.project": Str(), "logger.entity": Str(nullable=True),
    "logger.mode": Choice("online", "offline", "disabled"), "logger.group": Str(nullable=True),
    "perf.precision": Choice("fp32", "bf16", "fp16", "auto"), "perf.tf32": Bool(), "perf.cudnn_benchmark": Bool(),
    "perf.deterministic": Bool(), "perf.channels_last": Bool(), "perf.compile": Bool(),
    "perf.compile_mode": Choice("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs",
                                nullable=True),
    "perf.compile_backend": Str(), "perf.grad_checkpoint": Bool(),
}
#: keys whose values are not scalars, or are checked elsewhere (check_keys, the loaders)
NOT_SCALAR = ("paths", "hydra", "task.operator", "prior.kind", "data.kind", "sampler.method", "task._target_", "task.noise",
              "sampler._target_", "prior._target_",
              "metrics.extra")  # the user's metrics: their classes' own arguments (config.metrics.check_extra)
#: keys with a spec (the bad values tests/test_config_types.py tries) that config.validate checks itself:
#: class_label only matters for a class-conditional prior (config.check_class_label), others ignore it
CHECKED_IN_VALIDATE = ("prior.class_label",)


def spec_for(key: str) -> Kind | None:
    if key.startswith("tuned."):  # tuned.<...>.<sampler>.<key>: a value that lands in sampler.<key>
        return SPEC.get("sampler." + key.rsplit(".", 1)[1])
    if key in SPEC:
        return SPEC[key]
    return SPEC.get(key.rsplit(".", 1)[0] + ".*")


def scalar_items(plain: dict, prefix: str = ""):
    """(dotted key, value) of every scalar leaf of a resolved config (lists are left out, except on a key whose
    spec takes a pair: Float(pair=True))."""
    for key, value in plain.items():
        path = f"{prefix}{key}"
        if path in NOT_SCALAR or path.split(".")[0] in NOT_SCALAR:
            continue
        if isinstance(value, dict):
            yield from scalar_items(value, path + ".")
        elif not isinstance(value, (list, tuple)) or getattr(spec_for(path), "pair", False):
            yield path, value


def check_types(plain: dict) -> None:
    """Raise ConfigError (one line) for the first scalar key whose value has the wrong type or range.
    plain: the resolved config (config.resolved). Keys without a spec are left to check_keys."""
    from ..diffusion import space_timesteps

    for key, value in scalar_items(plain):
        kind = spec_for(key)
        if kind is None or key in CHECKED_IN_VALIDATE:
            continue
        problem = kind.problem(value)
        if problem is None and isinstance(kind, Respacing):
            try:
                space_timesteps(int(plain["prior"]["diffusion_steps"]), value)
            except (ConfigError, ValueError, TypeError, ZeroDivisionError) as err:
                problem = f"a respacing the prior's {plain['prior']['diffusion_steps']} steps allow ({err})"
        if problem is not None:
            shown = repr(value) if isinstance(value, str) else value
            raise ConfigError(f"{key}={shown}: expected {problem}".replace("\n", " "))
