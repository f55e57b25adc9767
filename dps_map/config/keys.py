"""The one list of each rule about config keys: which keys change a run's output, which are help text, and
which keys each config group may hold. The digest, the sweep's directory names, the aggregate's group labels
and the error messages all read these tuples; conf/config.yaml's ``override_dirname.exclude_keys``
cannot import Python, so a test holds it equal to :data:`DIRNAME_EXCLUDED`.
"""

from __future__ import annotations

#: settings that do not change a run's samples (dotted keys). Shards of one config share its digest, so
#: data.shard/num_shards are here; metrics change only the scores, which `python -m dps_map.evaluate` redoes
NON_OUTPUT = ("hydra", "logger", "progress", "device", "overwrite", "metrics", "measurement_batch",
              "data.shard", "data.num_shards")

#: keys whose value reaches the samples through another key, which is in the digest instead: the tuned table
#: (the value a run uses is in sampler.*) and the paths group (the resolved paths are in prior/sampler/data)
REDUNDANT = ("tuned", "paths")

#: help text of a prior config (how to get its files): rewording it must not disown finished runs
HELP_KEYS = ("prior.what", "prior.url", "prior.override")

#: weight files, identified by content in run.json's "weights" (a path keeps its name when the file changes,
#: and a moved checkout changes the path of the same file)
WEIGHT_KEYS = ("prior.checkpoint", "sampler.adapter")

#: everything the config digest leaves out
DIGEST_EXCLUDED = NON_OUTPUT + REDUNDANT + HELP_KEYS + WEIGHT_KEYS

#: command-line overrides that do not name a sweep job's directory (two jobs differing only in these would
#: write the same samples). Shards need their own directories and metrics=a,b sweeps keep theirs, so those
#: NON_OUTPUT keys name directories; hydra/launcher is the only Hydra key users override per job
DIRNAME_EXCLUDED = ("overwrite", "progress", "device", "logger", "hydra/launcher", "measurement_batch")

#: overrides left out of a group's label in a sweep's aggregate: shards and the non-output settings
LABEL_EXCLUDED = tuple(k for k in NON_OUTPUT if k != "hydra") + ("hydra/launcher",)


#: the keys each config group may hold (a key outside these is a typo: refused at start-up).
#: Sampler, operator, noise and prior keys come from the signatures of the callables their `_target_`s name
#: (dps_map/config/targets.py); `paths` is free-form.
TOP_KEYS = {"data", "prior", "task", "sampler", "metrics", "logger", "paths", "perf", "tuned", "hydra", "seed",
            "num_samples", "batch_size", "measurement_batch", "device", "overwrite", "progress"}
#: task keys besides the operator's and the noise model's (those come from their callables' signatures)
TASK_KEYS = {"name", "operator", "_target_", "noise"}
DATA_KEYS = {"demo": {"name", "kind", "per_photo", "num_shards", "shard", "photos"},
             "folder": {"name", "kind", "path", "max_images", "labels", "num_shards", "shard"},
             "gmm": {"name", "kind"}}
METRICS_KEYS = {"name", "names", "lpips_net", "kid_subsets", "kid_subset_size", "random_weights", "extra"}
PERF_KEYS = {"precision", "tf32", "cudnn_benchmark", "deterministic", "channels_last", "compile", "compile_mode",
             "compile_backend", "grad_checkpoint"}
LOGGER_KEYS = {"none": {"name"}, "wandb": {"name", "project", "entity", "mode", "group", "tags"}}
#: prior config keys that are not arguments of its builder: read by the runner, the checks and the sampler
#: YAMLs (name, kind, respacing, variance), or help text (HELP_KEYS)
PRIOR_CONFIG_KEYS = {"name", "kind", "_target_", "respacing", "variance", "adapter", *(k.split(".")[1] for k in HELP_KEYS)}
