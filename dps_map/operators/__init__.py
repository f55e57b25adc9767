"""Forward models and noise models. `build_operator` draws every random choice from a generator."""

from __future__ import annotations

import torch

from ..errors import ConfigError
from .base import Identity, LinearOperator, MatrixOperator, Operator, StackedOperator
from .blur import Blur, gaussian_kernel, motion_kernel
from .inpainting import Inpainting, box_mask, random_mask
from .noise import NOISES, GaussianNoise, PoissonNoise, build_noise, builtin_noise_keys, noise_keys
from .super_resolution import SuperResolution

__all__ = ["Operator", "LinearOperator", "Identity", "MatrixOperator", "StackedOperator", "Inpainting", "SuperResolution",
           "Blur", "GaussianNoise", "PoissonNoise", "build_operator", "operator_keys", "OPERATORS", "box_inpainting", "random_inpainting",
           "gaussian_blur", "motion_blur", "build_noise", "noise_keys", "builtin_noise_keys", "NOISES", "gaussian_kernel",
           "motion_kernel", "box_mask", "random_mask"]


#: the built-in operators by task.operator name (a task YAML without `_target_`); the shipped task YAMLs
#: name the same callables with `_target_`
OPERATORS = {"identity": "dps_map.operators.Identity", "super_resolution": "dps_map.operators.SuperResolution",
             "inpaint_box": "dps_map.operators.box_inpainting", "inpaint_random": "dps_map.operators.random_inpainting",
             "gaussian_blur": "dps_map.operators.gaussian_blur", "motion_blur": "dps_map.operators.motion_blur",
             "matrix": None}  # the Gaussian-mixture task: run.run_gmm draws A itself
#: keys of the matrix task (its operator is built by run.run_gmm)
MATRIX_KEYS = {"m", "min_modes", "min_weight"}
#: arguments the runner supplies (not config keys)
RUNTIME_ARGS = ("image_size", "generator")


def box_inpainting(image_size: int, generator: torch.Generator, box_fraction: float = 0.5,
                   location: str = "random") -> Inpainting:
    """A square box of box_fraction x image side hidden at a random place (or the centre)."""
    return Inpainting(box_mask(image_size, box_fraction, location, generator), pattern="box")


def random_inpainting(image_size: int, generator: torch.Generator, drop_ratio: float = 0.7) -> Inpainting:
    """Each pixel hidden with probability drop_ratio (all channels together)."""
    return Inpainting(random_mask(image_size, drop_ratio, generator), pattern="random")


def gaussian_blur(kernel_size: int = 61, blur_sigma: float = 3.0) -> Blur:
    return Blur(gaussian_kernel(kernel_size, blur_sigma))


def motion_blur(generator: torch.Generator, kernel_size: int = 61, intensity: float = 0.5) -> Blur:
    return Blur(motion_kernel(kernel_size, intensity, generator))


def operator_target(cfg):
    """The callable that builds a task's operator: task._target_, else the built-in named by task.operator
    (None for the matrix task)."""
    from ..targets import locate

    where = f"task={cfg.get('name')}"
    target = cfg.get("_target_")
    if not target:
        if cfg.get("operator") not in OPERATORS:
            raise ConfigError(f"{where}: no _target_ and unknown operator '{cfg.get('operator')}' "
                              f"(known: {', '.join(OPERATORS)})")
        target = OPERATORS[cfg.operator]
        if target is None:
            return None
    return locate(target, where)


def operator_keys(cfg) -> set:
    """The operator keys a task config may hold: the arguments of the callable it names."""
    from ..targets import signature_keys

    fn = operator_target(cfg)
    return MATRIX_KEYS if fn is None else signature_keys(fn) - set(RUNTIME_ARGS)


def build_operator(cfg, image_size: int, generator: torch.Generator) -> Operator:
    """The image operator of a task config: the callable named by its `_target_` (or by task.operator),
    called with the task keys in its signature, plus `image_size` and `generator` (every random choice,
    e.g. a mask or a motion kernel, is drawn from it) when it takes them."""
    from ..targets import call_target, signature_keys

    fn = operator_target(cfg)
    if fn is None:
        raise ConfigError(f"task {cfg.name}: the matrix operator is drawn with its Gaussian-mixture problem")
    if cfg.get("operator") == "super_resolution" and image_size % cfg.factor:
        raise ConfigError(f"task {cfg.name}: SR factor {cfg.factor} does not divide image size {image_size}")
    keys = signature_keys(fn)
    kwargs = {k: cfg[k] for k in keys if k in cfg}
    kwargs.update({k: v for k, v in (("image_size", image_size), ("generator", generator)) if k in keys})
    operator = call_target(fn, kwargs, f"task {cfg.get('name')}")
    if not isinstance(operator, Operator):
        raise ConfigError(f"task {cfg.name}: _target_ '{cfg.get('_target_')}' returned {type(operator).__name__}, "
                          "not a dps_map.operators.Operator")
    return operator
