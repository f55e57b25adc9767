"""Classes named in YAML: a sampler, operator (task), noise or prior config names the callable that builds it
with Hydra's ``_target_`` (a dotted path, e.g. ``mypkg.samplers.MySampler``), so a class in the user's own
module (on PYTHONPATH) is selected from a YAML in the user's own config directory without editing
dps_map. The built-in YAMLs use the same key.

The keys a config may hold are derived from the callable's signature (its ``__init__`` for a class,
following ``**kwargs`` up the base classes), so a typo is refused at start-up with the known keys.

This is Hydra's ``instantiate`` with three differences, which is why the project resolves `_target_` itself:
a config node also holds keys that are not arguments (a sampler's name, a prior's respacing and help text),
which instantiate would pass on; some arguments come from the run, not the YAML (an operator's image size
and random generator); and every failure must be one line naming the config group, not a traceback.
KINDS is the table of the three kinds a node names with `_target_` (sampler, operator, prior) and :func:`build`
the one way to build them; a task's noise model, named by the task key `noise`, goes through the same
:func:`locate` and :func:`call_target` (:func:`build_noise`).
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass

from omegaconf import DictConfig

from ..errors import ConfigError
from .keys import PRIOR_CONFIG_KEYS, TASK_KEYS


def locate(target: str, where: str):
    """The object at a dotted path, as Hydra's instantiate resolves `_target_` (the longest importable
    module prefix, then attributes), or ConfigError (one line) saying why not."""
    import importlib

    if not isinstance(target, str) or "." not in target or not all(p.isidentifier() for p in target.split(".")):
        raise ConfigError(f"{where}: _target_ must be a dotted path such as mypkg.module.MyClass, got {target!r}")
    parts = target.split(".")
    for cut in range(len(parts) - 1, 0, -1):
        module_name = ".".join(parts[:cut])
        try:
            obj = importlib.import_module(module_name)
        except ModuleNotFoundError as err:
            if err.name is not None and module_name != err.name and not module_name.startswith(err.name + "."):
                raise ConfigError(f"{where}: importing '{module_name}' for _target_ '{target}' failed: {err}") from err
            continue
        except Exception as err:  # the user's module itself fails to import (syntax error, ...)
            raise ConfigError(f"{where}: importing '{module_name}' for _target_ '{target}' failed: "
                              f"{type(err).__name__}: {err}") from err
        try:
            for attr in parts[cut:]:
                obj = getattr(obj, attr)
        except AttributeError:
            raise ConfigError(f"{where}: _target_ '{target}': module '{module_name}' has no "
                              f"'{'.'.join(parts[cut:])}'") from None
        if not callable(obj):
            raise ConfigError(f"{where}: _target_ '{target}' is not a class or function")
        return obj
    raise ConfigError(f"{where}: cannot import _target_ '{target}' (no module '{parts[0]}'; is it on PYTHONPATH?)")


def signature_keys(fn, skip=("self",)) -> set[str]:
    """Named parameters of fn (a class: the __init__ of it and of every base it forwards **kwargs to)."""
    funcs = [c.__init__ for c in fn.__mro__ if "__init__" in vars(c) and c is not object] \
        if inspect.isclass(fn) else [fn]
    keys = set()
    for f in funcs:
        params = inspect.signature(f).parameters.values()
        keys |= {p.name for p in params if p.name not in skip and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)}
        if not any(p.kind == p.VAR_KEYWORD for p in params):
            break  # this __init__ does not pass unknown keys further up
    return keys


def config_kwargs(fn, cfg, skip=()) -> dict:
    """The keys of a config node that fn's signature names (what fn is called with), except `skip`."""
    return {k: cfg[k] for k in signature_keys(fn) if k in cfg and k not in skip}


def call_target(fn, kwargs: dict, where: str):
    """fn(**kwargs), with arguments that do not fit fn's signature (a required one missing) refused as one
    ConfigError line before the call; a TypeError raised inside fn is a bug, not a config error: it propagates."""
    try:
        inspect.signature(fn).bind(**kwargs)
    except TypeError as err:
        raise ConfigError(f"{where}: {err}") from None
    return fn(**kwargs)


@dataclass(frozen=True)
class Kind:
    """How one kind of object is named in YAML and built."""

    group: str            # the config group, for messages (sampler=dps, task=sr4, prior=tiny)
    base: str             # the class every built object must be (dotted path)
    config_keys: frozenset  # keys of the node that are not arguments of its callable
    runtime: tuple = ()   # arguments the runner supplies, not config keys


KINDS = {
    "sampler": Kind("sampler", "dps_map.samplers.Sampler", frozenset({"name", "method", "_target_"})),
    "operator": Kind("task", "dps_map.operators.Operator", frozenset(TASK_KEYS), ("image_size", "generator")),
    "prior": Kind("prior", "dps_map.priors.Prior", frozenset(PRIOR_CONFIG_KEYS)),
}
#: the built-in noise models a task names with `noise: gaussian` (their arguments are task keys); a node
#: `noise: {_target_: mypkg.MyNoise, ...}` names any class, with its arguments in the node
NOISES = {"gaussian": "dps_map.operators.noise.gaussian_noise", "poisson": "dps_map.operators.noise.poisson_noise"}
#: the Gaussian-mixture task: its matrix operator is drawn with the problem (runner), so it has no _target_
MATRIX_TASK = {"operator": "matrix", "keys": frozenset({"m", "min_modes", "min_weight"})}


def _where(kind: str, cfg) -> str:
    return f"{KINDS[kind].group}={cfg.get('name')}"


def target(kind: str, cfg):
    """The callable a sampler, task or prior config names with `_target_` (None for the matrix task)."""
    if kind == "operator" and cfg.get("operator") == MATRIX_TASK["operator"] and not cfg.get("_target_"):
        return None
    if not cfg.get("_target_"):
        raise ConfigError(f"{_where(kind, cfg)}: no _target_ (the dotted path of the class or function that "
                          f"builds it, e.g. {KINDS[kind].base})")
    return locate(cfg._target_, _where(kind, cfg))


def keys(kind: str, cfg) -> set:
    """The keys a config node may hold: its callable's arguments plus the kind's own config keys."""
    fn = target(kind, cfg)
    if fn is None:
        return set(KINDS[kind].config_keys) | set(MATRIX_TASK["keys"]) | builtin_noise_keys()
    extra = builtin_noise_keys() if kind == "operator" else set()
    return set(KINDS[kind].config_keys) | extra | (signature_keys(fn) - set(KINDS[kind].runtime))


def build(kind: str, cfg, ignore=(), **runtime):
    """The object a config node names: its callable called with every key of the node except the kind's
    config keys that it does not take (and `ignore`), plus the runtime arguments it takes. A key the callable
    does not take, or a result that is not a KINDS[kind].base, is refused in one line."""
    fn, where = target(kind, cfg), _where(kind, cfg)
    if fn is None:
        raise ConfigError(f"{where}: the matrix operator is drawn with its Gaussian-mixture problem")
    skip = set(KINDS[kind].config_keys) | set(KINDS[kind].runtime) | set(ignore)
    if kind == "operator":
        skip |= builtin_noise_keys()  # the task's noise arguments (build_noise)
    names = signature_keys(fn)
    kwargs = {k: cfg[k] for k in cfg if (k in names and k not in KINDS[kind].runtime) or k not in skip}
    kwargs.update({k: v for k, v in runtime.items() if k in names})
    obj = call_target(fn, kwargs, where)
    base = locate(KINDS[kind].base, where)
    if not isinstance(obj, base):
        raise ConfigError(f"{where}: _target_ '{cfg.get('_target_')}' built a {type(obj).__name__}, not a "
                          f"{KINDS[kind].base}")
    return obj


def build_sampler(cfg):
    """The sampler of a conf/sampler/*.yaml. An adapter preset's ``adapter`` key belongs to the prior
    (:func:`adapter_of`, :func:`build_prior`), not to the sampler."""
    return build("sampler", cfg, ignore=("adapter",))


def build_operator(cfg, image_size: int, generator):
    """The image operator of a task config; every random choice (a mask, a motion kernel) is drawn from
    generator."""
    return build("operator", cfg, image_size=image_size, generator=generator)


def build_prior(cfg, device="cpu", adapter=None, perf=None):
    """The prior of a prior config, on device, frozen; with ``perf`` (a run's perf settings) in the run's precision
    with the backend switches and network knobs applied (config.device.prepare_perf), before an adapter attaches;
    with an adapter (``adapter``, None: the config's ``adapter`` key; False: none) the conditional prior of it and
    that adapter (priors.conditional.with_adapter), the one way an adapter attaches."""
    prior = build("prior", cfg).eval().requires_grad_(False).to(device)
    if perf is not None:
        from .device import prepare_perf

        prepare_perf(perf, device, prior if hasattr(prior, "configure_perf") else None)
    adapter = cfg.get("adapter") if adapter is None else adapter
    if not adapter:
        return prior
    from ..priors.conditional import with_adapter

    return with_adapter(prior, adapter)


def adapter_of(prior, sampler) -> str | None:
    """The adapter a run's prior carries: ``prior.adapter``, or the one an adapter preset names
    (``sampler=adapter_dps``: ``sampler.adapter``). Both set to different files is a ConfigError."""
    mine, preset = (prior or {}).get("adapter"), (sampler or {}).get("adapter")
    if mine and preset and str(mine) != str(preset):
        raise ConfigError(f"prior.adapter={mine} and sampler={sampler.get('name')}'s adapter {preset} differ: set one "
                          f"(sampler.adapter=... with the preset, or prior.adapter=... with its base sampler)")
    return mine or preset or None


def noise_target(cfg):
    """(the callable that builds a task's noise model, the node holding its arguments): a built-in name
    (arguments from the task) or a node with `_target_` (arguments from the node)."""
    where = f"task={cfg.get('name')}"
    spec = cfg.get("noise", "gaussian")
    if isinstance(spec, (dict, DictConfig)):
        if not spec.get("_target_"):
            raise ConfigError(f"{where}: a noise node needs _target_ (the class of the noise model), got keys "
                              f"{', '.join(sorted(spec)) or 'none'}")
        return locate(spec["_target_"], f"{where} noise"), spec
    if spec not in NOISES:
        raise ConfigError(f"{where}: unknown noise model '{spec}' (known: {', '.join(NOISES)}; or a node "
                          "noise: {_target_: mypkg.MyNoise, ...})")
    return locate(NOISES[spec], where), cfg


def builtin_noise_keys() -> set:
    """Task keys of the built-in noise models (sigma_y, poisson_rate): always accepted in a task, so the noise
    can be switched on the command line (task.noise=poisson)."""
    return set().union(*(signature_keys(locate(t, "noise")) for t in NOISES.values()))


def noise_keys(cfg) -> set | None:
    """The keys a task's noise node may hold, or None when task.noise names a built-in (its keys are task keys)."""
    fn, source = noise_target(cfg)
    return None if source is cfg else {"_target_"} | signature_keys(fn)


def build_noise(cfg):
    """The noise model of a task config; it must have ``sample(Ax, generator)`` and ``misfit(y, Ax)``."""
    fn, source = noise_target(cfg)
    noise = call_target(fn, config_kwargs(fn, source), f"task={cfg.get('name')} noise")
    if not all(callable(getattr(noise, m, None)) for m in ("sample", "misfit")):
        raise ConfigError(f"task={cfg.get('name')}: the noise model {type(noise).__name__} needs sample(Ax, generator) "
                          "and misfit(y, Ax) methods")
    return noise
