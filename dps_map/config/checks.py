"""Start-up checks of a composed config: impossible combinations stop before any model is built."""

from __future__ import annotations

from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from ..data import IMAGENET_WHERE, check_class_labels, demo_photos
from ..errors import ConfigError, MissingFileError
from ..io import absolute_path
from .device import check_perf_settings
from .keys import DATA_KEYS, LOGGER_KEYS, METRICS_KEYS, PERF_KEYS, TOP_KEYS
from .metrics import check_extra
from .targets import build_noise, noise_keys
from .targets import keys as target_keys
from .types import check_types


def resolve_device(name: str) -> torch.device:
    """'auto' -> the first CUDA GPU if there is one, else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device={name} but CUDA is not available here; use device=auto or device=cpu")
    return device


def resolved(cfg: DictConfig) -> dict:
    """The config as plain containers, with every interpolation resolved (clear error if one fails).
    Hydra's own node (present when composed with return_hydra_config=True) is left out."""
    try:
        return OmegaConf.to_container(OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"]),
                                      resolve=True, throw_on_missing=True)
    except OmegaConfBaseException as err:
        raise ConfigError(f"config: {str(err).splitlines()[0]}") from err


def _check_keys(where: str, node, allowed: set) -> None:
    unknown = sorted(set(node.keys()) - allowed)
    if unknown:
        raise ConfigError(f"unknown key{'s' if len(unknown) > 1 else ''} {', '.join(unknown)} in {where} "
                          f"(known: {', '.join(sorted(allowed))})")


def _unet_keys() -> set:
    import inspect

    from guided_diffusion.script_util import create_model

    return set(inspect.signature(create_model).parameters)


def check_keys(cfg: DictConfig) -> None:
    """Every key of every group must be one the code reads (a typo would otherwise be ignored silently)."""
    _check_keys("the top-level config", cfg, TOP_KEYS)
    task, prior, data, sampler = cfg.task, cfg.prior, cfg.data, cfg.sampler
    _check_keys(f"task={task.get('name')}", task, target_keys("operator", task))
    node_keys = noise_keys(task)  # None: a built-in noise named by task.noise (its keys are task keys)
    if node_keys is not None:
        _check_keys(f"task={task.get('name')} noise", task.noise, node_keys)
    _check_keys(f"prior={prior.get('name')}", prior, target_keys("prior", prior))
    if prior.get("kind") == "adm":
        _check_keys(f"prior={prior.name} unet", prior.unet, _unet_keys())
    if prior.get("kind") == "adm_upsampler":
        from ..priors.upsampler import SR_FLAGS

        _check_keys(f"prior={prior.name} unet", prior.unet, set(SR_FLAGS))
    if data.get("kind") not in DATA_KEYS:
        raise ConfigError(f"data={data.get('name')}: unknown kind '{data.get('kind')}' (demo, folder, gmm)")
    _check_keys(f"data={data.name}", data, DATA_KEYS[data.kind])
    _check_keys(f"sampler={sampler.get('name')}", sampler, target_keys("sampler", sampler) | {"adapter"})
    _check_keys(f"metrics={cfg.metrics.get('name')}", cfg.metrics, METRICS_KEYS)
    if cfg.get("perf") is not None:
        check_perf_settings(cfg.perf)  # before the key check: the 0.2 key gets its own message
        _check_keys("perf", cfg.perf, PERF_KEYS)
    if cfg.logger.get("name") not in LOGGER_KEYS:
        raise ConfigError(f"logger={cfg.logger.get('name')}: unknown logger (known: {', '.join(LOGGER_KEYS)})")
    _check_keys(f"logger={cfg.logger.name}", cfg.logger, LOGGER_KEYS[cfg.logger.name])


def _is_adapter(sampler) -> bool:
    from ..samplers import ADAPTER_METHODS

    return sampler.get("method") in ADAPTER_METHODS or sampler.get("name") in ADAPTER_METHODS


#: the make target that trains the adapters a paper target needs, per prior (docs/paper.md "Reproducing the paper")
PAPER_ADAPTER_TARGETS = {"adm512": "make train-adapter-paper", "sd2_base": "make train-adapter-paper-sd2"}


def adapter_training_command(task: str, prior: str, path) -> str:
    """How to get the adapter of (task, prior) at path: the paper's make target where there is one, and the
    train_adapter command line that writes it."""
    command = f"`python -m dps_map.train_adapter task={task} prior={prior} export_path={path}`"
    target = PAPER_ADAPTER_TARGETS.get(prior)
    return f"`{target}` (the paper's recipe) or {command}" if target else command


def check_adapter(sampler, prior=None, task=None) -> None:
    """A prior with an adapter (prior.adapter, or an adapter preset's sampler.adapter) needs it trained (an ADM
    prior's: a .pt file; a latent prior's: a ControlNet folder), checked before any model is built. The error names
    the path, the command that trains it and the key to set."""
    from .targets import adapter_of

    path = adapter_of(prior, sampler)
    if not path and not _is_adapter(sampler):
        return
    prior_name, task_name = (prior or {}).get("name", "<prior>"), (task or {}).get("name", "<task>")
    latent = (prior or {}).get("kind") == "latent"
    key = "prior.adapter" if (prior or {}).get("adapter") else "sampler.adapter"
    if not path:
        raise ConfigError(f"sampler={sampler.name} needs an adapter checkpoint: train one with "
                          f"{adapter_training_command(task_name, prior_name, '...')} and pass sampler.adapter=PATH")
    if (prior or {}).get("kind") == "adm_upsampler":
        raise ConfigError(f"prior={prior_name} is already conditional: use sampler=ddpm (alone) or dps/dmap "
                          f"on it, without an adapter (sampler={sampler.name}, {key}={path})")
    from ..priors.latent import controlnet_folder

    if latent and not controlnet_folder(path):
        folder = Path(absolute_path(path))
        folder = folder.with_suffix("") if folder.suffix == ".pt" else folder
        raise MissingFileError(folder / "config.json", f"ControlNet folder of {key} (task={task_name}, "
                               f"prior={prior_name})",
                               adapter_training_command(task_name, prior_name, folder),
                               f"{key}=/path/to/controlnet_folder (or paths.checkpoints, env DPS_MAP_ADAPTER)")
    if not latent and not (Path(absolute_path(path)).is_file() or controlnet_folder(path)):
        raise MissingFileError(absolute_path(path), f"adapter checkpoint of {key} (task={task_name}, "
                               f"prior={prior_name})",
                               adapter_training_command(task_name, prior_name, absolute_path(path)),
                               f"{key}=/path/to/adapter.pt (or paths.checkpoints, env DPS_MAP_ADAPTER)")


def check_prior_checkpoint(prior) -> None:
    """The prior's checkpoint must exist (checked again, and loaded safely, when the prior is built);
    checked here so a sweep stops in the launching process, before any job is submitted."""
    if prior.get("kind") == "latent" and prior.get("source") == "folder":
        from ..priors.latent import check_folder

        check_folder(prior.path, prior.get("embedding_cache"))
    if prior.get("kind") not in ("adm", "adm_upsampler") or prior.get("random_init", False):
        return
    path = absolute_path(prior.checkpoint)
    if not path or not Path(path).is_file():
        raise MissingFileError(path, prior.what, prior.url + download_hint(prior.name), prior.override)


#: the smallest `python -m dps_map.weights` target that fetches each prior's checkpoint (its missing-file message)
PRIOR_TARGETS = {"adm512": "paper", "adm128_512_upsampler": "paper", "adm256_uncond": "adm256", "sd2_base": "paper-sd2"}


def download_hint(prior_name: str) -> str:
    """The weights command that fetches a prior's file, as a clause for its missing-file message ('' if none does)."""
    target = PRIOR_TARGETS.get(prior_name)
    return f" (or `python -m dps_map.weights {target} --download` with the same paths.* overrides)" if target else ""


def check_data(prior, data) -> None:
    """The images exist (demo photographs, or the folder) and carry the class labels the prior needs."""
    if data.kind == "demo":
        demo_photos(data)
    if data.kind == "folder" and not Path(absolute_path(data.path)).is_dir():
        where, override = ((IMAGENET_WHERE, "paths.imagenet_val=/path/to/val (or env DPS_MAP_IMAGENET_VAL)")
                           if data.name == "imagenet_val"
                           else ("your dataset (any folder of images)", "data.path=/path/to/images"))
        raise MissingFileError(absolute_path(data.path), f"image folder of data={data.name}", where, override)
    check_class_label(prior, data)


def check_class_label(prior, data) -> None:
    """A class-conditional prior needs prior.class_label: an ImageNet class index, 'random' (one per
    measurement) or 'data' (each image's own label: every image must have one)."""
    if not (prior.get("unet") or {}).get("class_cond", False):
        return
    label = prior.get("class_label")
    if label == "data":
        check_class_labels(data)
    elif label != "random" and not (isinstance(label, int) and not isinstance(label, bool) and 0 <= label < 1000):
        raise ConfigError(f"prior={prior.name} is class-conditional: prior.class_label must be 'data' (each image's "
                          f"ImageNet label), 'random' or a class index in [0, 1000), got {label!r}")


def prior_image_size(prior) -> int | None:
    """The image size of a prior config (None if it does not say: a `_target_` prior without image_size)."""
    if prior.get("kind") == "adm":
        return prior.unet.image_size
    if prior.get("kind") == "adm_upsampler":
        return prior.unet.large_size
    return prior.get("image_size")


def check_perf(plain: dict) -> None:
    """Settings that contradict each other: one precision per run (dps_map/config/device.py)."""
    perf = plain.get("perf") or {}
    precision = perf.get("precision") or "fp32"
    if (plain["prior"].get("unet") or {}).get("use_fp16") and precision != "fp16":
        raise ConfigError(f"prior.unet.use_fp16=true (fp16 weights) contradicts perf.precision={precision}: "
                          "set perf.precision=fp16, or use_fp16=false")


def validate(cfg: DictConfig) -> None:
    """Raise ConfigError for an impossible configuration (before anything is built)."""
    plain = resolved(cfg)
    check_adapter(cfg.sampler, cfg.prior, cfg.task)
    check_prior_checkpoint(cfg.prior)
    check_keys(cfg)
    check_types(plain)  # types and ranges of every scalar key, the one place for them (dps_map/config/types.py)
    check_perf(plain)
    check_extra(cfg.metrics)  # the user's metrics: new names, importable classes (dps_map/config/metrics.py)
    build_noise(cfg.task)  # cheap: a noise class's own checks (and its sample/misfit methods) at start-up too
    task, prior, data = cfg.task, cfg.prior, cfg.data
    is_gmm_task = task.operator == "matrix"
    if is_gmm_task != (prior.kind == "gmm") or is_gmm_task != (data.kind == "gmm"):
        raise ConfigError(f"task={task.name}, prior={prior.name} and data={data.name} do not fit together: "
                          "the Gaussian-mixture problem needs task=gmm_linear prior=gmm data=gmm")
    if cfg.sampler.method in ("exact", "oracle") and not is_gmm_task:
        raise ConfigError(f"sampler={cfg.sampler.name} needs the exact posterior: use it with task=gmm_linear")
    if is_gmm_task:
        return
    size = prior_image_size(prior)
    if prior.kind == "adm_upsampler":  # a conditional SR model: only its own SR factor
        factor = prior.unet.large_size // prior.unet.small_size
        if task.operator != "super_resolution" or task.factor != factor:
            raise ConfigError(f"prior={prior.name} is a conditional SR x{factor} model: it restores task=sr{factor} "
                              f"measurements only, not task={task.name}")
    if size is not None and task.operator == "super_resolution" and size % task.factor:
        raise ConfigError(f"task={task.name}: SR factor {task.factor} does not divide the image size {size} "
                          f"of prior={prior.name}")
    if task.operator == "inpaint_box" and not 0 < task.box_fraction < 1:
        raise ConfigError(f"task={task.name}: box_fraction must lie in (0, 1) (the box must be smaller than "
                          f"the {size}px image), got {task.box_fraction}")
    if size is not None and task.operator == "inpaint_box" and not 1 <= round(task.box_fraction * size) < size:
        raise ConfigError(f"task={task.name}: a box of {round(task.box_fraction * size)}px does not fit in a "
                          f"{size}px image (task.box_fraction={task.box_fraction})")
    if size is not None and task.operator in ("gaussian_blur", "motion_blur") and task.kernel_size // 2 >= size:
        raise ConfigError(f"task={task.name}: a {task.kernel_size}px kernel is too large for {size}px images "
                          f"(set task.kernel_size below {2 * size})")
    check_data(prior, data)
    shards = data.get("num_shards", 1)
    if not 0 <= data.get("shard", 0) < shards:
        raise ConfigError(f"data.shard={data.get('shard')} must lie in [0, data.num_shards={shards})")
    if cfg.sampler.get("variance") == "learned_range" and not (prior.get("unet") or {}).get("learn_sigma", False):
        raise ConfigError(f"sampler.variance=learned_range needs a prior with learn_sigma (prior={prior.name})")
