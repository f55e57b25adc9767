"""Classes named in YAML: a sampler, operator (task), noise or prior config names the callable that builds it
with Hydra's ``_target_`` (a dotted path, e.g. ``mypkg.samplers.MySampler``), so a class in the user's own
module (on PYTHONPATH) is selected from a YAML in the user's own config directory without editing
dps_map. The built-in YAMLs use the same key.

The keys a config may hold are derived from the callable's signature (its ``__init__`` for a class,
following ``**kwargs`` up the base classes), so a typo is refused at start-up with the known keys.
"""

from __future__ import annotations

import inspect

from .errors import ConfigError

#: the prefix of built-in targets: these are implied by the config's own name key (sampler.method,
#: task.operator), so they are left out of the config digest (run directories of older versions stay valid)
BUILTIN_PREFIX = "dps_map."


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


def strip_builtin_targets(plain: dict) -> dict:
    """A copy of a resolved config without built-in `_target_` keys (for the config digest)."""
    out = {}
    for key, value in plain.items():
        if key == "_target_" and isinstance(value, str) and value.startswith(BUILTIN_PREFIX):
            continue
        out[key] = strip_builtin_targets(value) if isinstance(value, dict) else value
    return out
