"""`python -m dps_map.weights [TARGET] [--download] [--verify] [overrides ...]`: the files a target needs.

For every checkpoint, weight file and data folder a target reads, it prints the path the code resolves
(``paths.*``, the ``DPS_MAP_*`` variables and the torch hub cache, through the same functions and
config the runs use; Hydra overrides such as ``paths.adm512=...`` apply as they would to a run),
whether it is there, its size, the sha256 where one is published and the exact URL.

``--download`` fetches the missing downloadable files into those paths: plain URLs through
``torch.hub.download_url_to_file`` (progress bar, sha256 prefix), into a temporary name that is renamed
only after the size (the server's Content-Length and the size our table records) and the sha256 have been
checked; the Stable Diffusion 2-base files through ``huggingface_hub.snapshot_download`` from the model
id, then checked against the hub's sizes and LFS sha256. ImageNet validation images and their labels
need a login: they are listed with where to get them, never fetched. This is the only module of dps_map
that downloads anything, and only when asked to.

Exit code: 0 when everything the target needs is present (or was downloaded), 1 when something is
missing (or fails --verify), 2 for bad usage.
"""

from __future__ import annotations

import argparse
import os
import sys
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from .data import IMAGENET_WHERE, LABELS_WHERE
from .errors import UserError
from .io import sha256_file

#: targets -> what they cover (the files are worked out from the composed config)
TARGETS = {
    "paper": "what `make reproduce-paper` reads: ADM 512, the 128->512 upsampler, LPIPS, Inception, ImageNet val "
             "and its labels",
    "paper-sd2": "what `make reproduce-paper-sd2` reads: the Stable Diffusion 2-base folder, LPIPS, Inception, "
                 "ImageNet val",
    "metrics": "the metric weights: LPIPS AlexNet and VGG backbones, LPIPS linear layers, FID Inception",
    "adm256": "the ADM 256x256 unconditional checkpoint (prior=adm256_uncond)",
    "all": "everything above",
}
#: the config each target composes (before the user's overrides)
TARGET_CONFIGS = {
    "paper": ["+experiment=paper", "+prior@reference=adm128_512_upsampler"],  # as experiments.score_diagnostics
    "paper-sd2": ["+experiment=paper_sd2"],
    "metrics": ["metrics=default"],
    "adm256": ["prior=adm256_uncond"],
}
#: fetched with the text encoder although the loader does not require them: the tokenizer's special tokens
#: as the repository has them (transformers reads special_tokens_map.json when it is there)
HUB_EXTRA_FILES = ("tokenizer/special_tokens_map.json",)


@dataclass
class Item:
    """One file (or folder) a target needs."""

    what: str
    path: Path | None
    override: str             # how to point to it
    kind: str                 # url: fetched from url | hub: a file of a Hugging Face model | package | manual
    url: str                  # the exact URL (url, hub), or how to get it (package, manual)
    present: bool
    size: int | None = None   # bytes our table records (None: not recorded)
    size_tolerance: int = 0
    sha256: str | None = None         # full published digest
    sha256_prefix: str | None = None  # published first hex digits (torch hub file names)
    detail: str = ""          # a folder's content (in place of a size)
    note: str = ""            # why it counts as missing, or where it comes from
    model_id: str = ""        # hub: the model id ...
    rel: str = ""             # ... and the file's path in it
    folder: Path | None = None  # hub: the local folder of the model

    @property
    def downloadable(self) -> bool:
        return self.kind == "hub" or (self.kind == "url" and self.url.startswith(("http://", "https://", "file:")))


# -- what a target needs ----------------------------------------------------------------------------------
def _file_item(what, path, override, url, **extra) -> Item:
    path = Path(path) if path else None
    kind = "url" if url.startswith(("http://", "https://", "file:")) else "manual"
    return Item(what, path, override, kind, url, present=bool(path and path.is_file()), **extra)


def prior_item(prior) -> Item:
    """An ADM checkpoint: the path config.check_prior_checkpoint checks, the URL of the prior's YAML."""
    from .io import absolute_path

    return _file_item(prior.what, absolute_path(prior.checkpoint), prior.override, prior.url)


def metric_items(keys, paths) -> list[Item]:
    """WEIGHT_FILES entries, at the paths dps_map.metrics resolves (paths.* > env var > default location)."""
    from .metrics.weight_files import WEIGHT_FILES, weight_location

    items = []
    for key in keys:
        entry = WEIGHT_FILES[key]
        short = key.rsplit("_", 1)[0] if key.startswith("lpips") else key
        override = f"{entry.override}=/path/to/{entry.filename}" + (f" (or env {entry.env})" if entry.env else "")
        item = _file_item(entry.what, weight_location(key, paths.get(short)), override, entry.url, size=entry.size,
                          size_tolerance=entry.size_tolerance, sha256=entry.sha256, sha256_prefix=entry.sha256_prefix)
        if key.startswith("lpips_linear"):
            item.kind = "package"
        items.append(item)
    return items


def imagenet_items(cfg) -> list[Item]:
    """The ImageNet validation folder and, for a prior that reads each image's class from the data, its labels."""
    from .data import check_class_labels, folder_files
    from .io import absolute_path

    data, prior = cfg.data, cfg.prior
    root = Path(absolute_path(data.path))
    n_images, detail = 0, ""
    if root.is_dir():
        try:
            n_images = len(folder_files(root))
            detail = f"{n_images} images (the first {data.max_images} by file name are used)"
        except UserError as err:
            detail = str(err)
    items = [Item(f"image folder of data={data.name}", root, "paths.imagenet_val=/path/to/val (or env "
                  "DPS_MAP_IMAGENET_VAL)", "manual", IMAGENET_WHERE, present=n_images > 0, detail=detail)]
    if not ((prior.get("unet") or {}).get("class_cond") and str(prior.get("class_label")) == "data"):
        return items
    what, override = "class labels of the ImageNet val images", \
        "paths.imagenet_val_labels=/path/to/LOC_val_solution.csv (or env DPS_MAP_IMAGENET_VAL_LABELS)"
    labels = Path(absolute_path(data.labels)) if data.get("labels") else None
    ok, detail = False, ""
    if items[0].present and (labels is None or labels.is_file()):
        try:
            check_class_labels(data)  # what the runner checks at start-up
            ok, detail = True, "every image used has one"
        except UserError as err:
            detail = str(err)
    if labels is None:
        detail = (f"none set: read from <root>/<wnid>/<file> folders; {detail}" if detail else
                  "none set: read from <root>/<wnid>/<file> folders")
    items.append(Item(what, labels, override, "manual", LABELS_WHERE, present=ok, note=detail))
    return items


def sd2_items(prior, model_id: str) -> list[Item]:
    """The files of the diffusers folder prior=sd2_base loads (dps_map.priors.latent.check_folder's list)."""
    from huggingface_hub import constants

    from .io import absolute_path
    from .priors.latent import NETWORK_FILES, TEXT_FILES, TOKENIZER_VOCABS

    folder = Path(absolute_path(prior.path))
    cache = prior.get("embedding_cache")
    cached = bool(cache) and Path(absolute_path(cache)).is_file()
    rels = list(NETWORK_FILES)
    if not cached:  # the text encoder and tokenizer are needed until the empty-prompt embedding is cached
        vocab = next((v for v in TOKENIZER_VOCABS if all((folder / r).is_file() for r in v)), TOKENIZER_VOCABS[0])
        rels += list(TEXT_FILES) + list(vocab)
    return [Item(f"'{rel}' of the Stable Diffusion 2-base folder", folder / rel, prior.override, "hub",
                 f"{constants.ENDPOINT}/{model_id}/resolve/main/{rel}", present=(folder / rel).is_file(),
                 model_id=model_id, rel=rel, folder=folder) for rel in rels]


def target_items(target: str, overrides: list[str], sd2_model_id: str | None = None) -> list[Item]:
    """Every file `target` needs, resolved from the config a run with `overrides` composes."""
    from .config.sweep import compose_job
    from .metrics.weight_files import needed_weights
    from .priors.latent import SD2_MODEL_ID

    if target == "all":
        items, seen = [], set()
        for name in TARGET_CONFIGS:
            for item in target_items(name, overrides, sd2_model_id):
                if (item.kind, str(item.path), item.what) not in seen:
                    seen.add((item.kind, str(item.path), item.what))
                    items.append(item)
        return items
    if target not in TARGET_CONFIGS:
        raise UserError(f"unknown target '{target}' (targets: {', '.join(TARGETS)})")
    cfg = compose_job(TARGET_CONFIGS[target] + list(overrides))
    paths = dict(cfg.paths)
    if target == "metrics":  # both LPIPS nets, the configured one first
        nets = sorted(("alex", "vgg"), key=lambda net: net != cfg.metrics.get("lpips_net", "alex"))
        items = metric_items([k for net in nets for k in needed_weights(["lpips"], net).values()] + ["fid_inception"],
                             paths)
        # one paths.lpips_backbone (or env) file serves the configured net only: the other is not listed there
        return [it for n, it in enumerate(items) if all(it.path != other.path for other in items[:n])]
    if target == "adm256":
        return [prior_item(cfg.prior)]
    if cfg.prior.get("kind") == "latent":
        items = sd2_items(cfg.prior, sd2_model_id or SD2_MODEL_ID)
    else:
        items = [prior_item(cfg.prior)] + ([prior_item(cfg.reference)] if "reference" in cfg else [])
    keys = needed_weights(cfg.metrics.names, cfg.metrics.get("lpips_net", "alex")).values()
    return items + metric_items(list(keys), paths) + imagenet_items(cfg)


# -- downloading ------------------------------------------------------------------------------------------
def remote_size(url: str) -> int | None:
    """The server's Content-Length for url (a HEAD request; file:// URLs too), None if it gives none."""
    request = urllib.request.Request(url, method="HEAD", headers={"User-Agent": "dps-map"})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            length = response.headers.get("Content-Length")
    except (OSError, ValueError):  # the download itself reports an unreachable URL
        return None
    return int(length) if length else None


def check_size(item: Item, actual: int, server: int | None) -> None:
    """UserError if `actual` bytes differ from the server's Content-Length or from the size our table records."""
    if server is not None and actual != server:
        raise UserError(f"download of {item.what} from {item.url} is {actual} bytes, the server announced {server}: "
                        "refused (run the command again)")
    if item.size is not None and abs(actual - item.size) > item.size_tolerance:
        raise UserError(f"download of {item.what} from {item.url} is {actual} bytes, expected {item.size}"
                        + (f" +- {item.size_tolerance}" if item.size_tolerance else "") + ": refused")


def download_url(item: Item, progress: bool = True) -> None:
    """Fetch item.url to item.path through a temporary name; the file is renamed into place only after its size
    and sha256 (the published digest or prefix) are checked, and nothing is left behind when a check fails."""
    from torch.hub import download_url_to_file

    item.path.parent.mkdir(parents=True, exist_ok=True)
    tmp = item.path.with_name(item.path.name + ".download")
    server = remote_size(item.url)
    try:
        try:  # checks the sha256 prefix while it downloads (a full digest is its own prefix)
            download_url_to_file(item.url, str(tmp), hash_prefix=item.sha256 or item.sha256_prefix, progress=progress)
        except RuntimeError as err:  # torch.hub: "invalid hash value (expected ..., got ...)"
            raise UserError(f"download of {item.what} from {item.url} refused: {err}") from err
        except (OSError, ValueError) as err:
            raise UserError(f"download of {item.what} from {item.url} failed: {err}") from err
        check_size(item, tmp.stat().st_size, server)
        if not (item.sha256 or item.sha256_prefix):  # nothing published to check against: print it for the record

            print(f"sha256 {sha256_file(tmp)}  {item.path.name} (not published by its source; note it)", file=sys.stderr)
        os.replace(tmp, item.path)
    finally:
        tmp.unlink(missing_ok=True)


def download_hub(items: list[Item]) -> None:
    """Fetch the missing files of one Hugging Face model into its folder (huggingface_hub.snapshot_download,
    which checks each file's size), then check each file against the hub's size and LFS sha256; a file that
    does not match is deleted."""
    import huggingface_hub


    model_id, folder = items[0].model_id, items[0].folder
    rels = [it.rel for it in items]
    if any(rel.startswith(("text_encoder/", "tokenizer/")) for rel in rels):
        rels += [rel for rel in HUB_EXTRA_FILES if not (folder / rel).is_file()]
    try:
        huggingface_hub.snapshot_download(repo_id=model_id, local_dir=str(folder), allow_patterns=rels)
        info = {f.path: f for f in huggingface_hub.HfApi().get_paths_info(model_id, rels) if hasattr(f, "size")}
    except Exception as err:  # the hub's errors (network, unknown model, gated repository) as one line
        raise UserError(f"download of {model_id} into {folder} failed: {type(err).__name__}: "
                        f"{str(err).strip().splitlines()[0] if str(err).strip() else ''}") from err
    for rel in rels:
        path, remote = folder / rel, info.get(rel)
        if remote is None or not path.is_file():
            continue  # not in the repository (a tokenizer.json, say): check_folder names what is missing
        problem = None
        if path.stat().st_size != remote.size:
            problem = f"{path.stat().st_size} bytes, the hub says {remote.size}"
        elif remote.lfs is not None and sha256_file(path) != remote.lfs.sha256:
            problem = f"sha256 differs from the hub's {remote.lfs.sha256[:16]}..."
        if problem:
            path.unlink()
            raise UserError(f"'{rel}' of {model_id} refused ({problem}): deleted, run the command again")


def download_missing(items: list[Item], progress: bool = True) -> list[str]:
    """Download every missing downloadable item; one error line per failure (the others still go on)."""
    errors = []
    hub: dict[tuple[str, str], list[Item]] = {}
    for item in items:
        if item.present or not item.downloadable:
            continue
        if item.kind == "hub":
            hub.setdefault((item.model_id, str(item.folder)), []).append(item)
            continue
        print(f"downloading {item.url}\n         -> {item.path}", file=sys.stderr)
        try:
            download_url(item, progress)
        except UserError as err:
            errors.append(str(err))
    for group in hub.values():
        print(f"downloading {len(group)} files of {group[0].model_id} -> {group[0].folder}", file=sys.stderr)
        try:
            download_hub(group)
        except UserError as err:
            errors.append(str(err))
    return errors


def verify(items: list[Item]) -> list[str]:
    """Hash the present files that have a published sha256 (or prefix): one line per mismatch."""

    bad = []
    for item in items:
        if item.present and item.path and item.path.is_file() and (item.sha256 or item.sha256_prefix):
            digest = sha256_file(item.path)
            if not digest.startswith(item.sha256 or item.sha256_prefix):
                bad.append(f"'{item.path}' has sha256 {digest[:16]}..., published {(item.sha256 or item.sha256_prefix)[:16]}"
                           f"...: get it again from {item.url}")
    return bad


# -- report -----------------------------------------------------------------------------------------------
def _bytes(n: int) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f} {unit} = {n} bytes"
    return f"{n} bytes"


def describe(item: Item) -> str:
    """Six or seven lines: status and what, path, override, size, sha256, URL (or where to get it), a note."""
    status = "present" if item.present else "MISSING"
    if item.path is not None and item.path.is_file():
        size = _bytes(item.path.stat().st_size)
    else:
        size = item.detail or "-"
    if item.size is not None and not (item.path and item.path.is_file()):
        size += f" (expected {_bytes(item.size)}" + (f" +- {item.size_tolerance})" if item.size_tolerance else ")")
    if item.sha256:
        sha = f"{item.sha256} (published)"
    elif item.sha256_prefix:
        sha = f"{item.sha256_prefix}... (first {len(item.sha256_prefix)} hex digits, published in the file name)"
    elif item.kind == "hub":
        sha = "the hub's (git-LFS) sha256, checked after --download"
    else:
        sha = "-" if item.kind == "manual" else "not published"
    source = {"url": "url", "hub": "url", "package": "from", "manual": "get"}[item.kind]
    where = f"by hand: {item.url}" if item.kind == "manual" else item.url
    return (f"{status:8} {item.what}\n"
            f"         path    {item.path if item.path is not None else '(none)'}\n"
            f"         set by  {item.override}\n"
            f"         size    {size}\n"
            f"         sha256  {sha}\n"
            f"         {source:7} {where}" + (f"\n         note    {item.note}" if item.note else ""))


def describe_hub(items: list[Item]) -> str:
    """The files of one Hugging Face model folder: the folder's lines, then one line per file."""
    first, n = items[0], sum(it.present for it in items)
    base = first.url[: -len(first.rel)].removesuffix("/resolve/main/")
    lines = [f"{'present' if n == len(items) else 'MISSING':8} Stable Diffusion 2-base diffusers folder "
             f"(model {first.model_id}): {n} of {len(items)} files",
             f"         path    {first.folder}",
             f"         set by  {first.override}",
             "         sha256  the hub's git-LFS sha256 of each large file, checked after --download",
             f"         url     {base}/resolve/main/<file>"]
    for it in items:
        size = f"  {_bytes(it.path.stat().st_size)}" if it.present else ""
        lines.append(f"         {'present' if it.present else 'MISSING':8}{it.rel}{size}")
    return "\n".join(lines)


def report(target: str, items: list[Item], overrides: list[str]) -> str:
    lines = [f"{target}: {TARGETS[target]}" + (f" (overrides: {' '.join(overrides)})" if overrides else ""), ""]
    hub: dict[str, list[Item]] = {}
    for item in items:
        if item.kind != "hub":
            lines.append(describe(item))
        elif str(item.folder) not in hub:
            hub[str(item.folder)] = [it for it in items if it.kind == "hub" and it.folder == item.folder]
            lines.append(describe_hub(hub[str(item.folder)]))
    missing = [it for it in items if not it.present]
    lines.append(f"\n{len(items) - len(missing)} of {len(items)} present.")
    fetchable = [it for it in missing if it.downloadable]
    if fetchable:
        lines.append(f"{len(fetchable)} missing can be downloaded: python -m dps_map.weights {target} --download"
                     + (f" {' '.join(overrides)}" if overrides else ""))
    by_hand = [it for it in missing if not it.downloadable]
    if by_hand:
        lines.append(f"{len(by_hand)} missing must be got by hand (see their 'get'/'from' lines): "
                     + "; ".join(it.what for it in by_hand))
    if target in ("paper", "paper-sd2", "all"):
        lines.append("Not listed: the conditional adapters/ControlNets, trained here (make train-adapter-paper[-sd2]); "
                     "make preflight-paper[-sd2] checks them.")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m dps_map.weights", description=__doc__.split("\n\n")[0].split(": ", 1)[1],
        epilog="targets: " + "; ".join(f"{k}: {v}" for k, v in TARGETS.items()),
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("args", nargs="*", metavar="TARGET|OVERRIDE",
                        help="a target (default: paper), then Hydra overrides as a run takes them (paths.adm512=...)")
    parser.add_argument("--download", action="store_true", help="fetch the missing downloadable files into their paths")
    parser.add_argument("--verify", action="store_true", help="hash the present files against the published sha256")
    parser.add_argument("--sd2-model-id", default=None,
                        help="the Hugging Face model to fetch SD2-base from (default: stabilityai/stable-diffusion-2-base; "
                             "HF_ENDPOINT selects a mirror)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    targets = [a for a in args.args if "=" not in a]
    overrides = [a for a in args.args if "=" in a]
    if len(targets) > 1 or (targets and targets[0] not in TARGETS):
        parser.error(f"one target, one of {', '.join(TARGETS)} (got {' '.join(targets)})")
    target = targets[0] if targets else "paper"
    try:
        items = target_items(target, overrides, args.sd2_model_id)
        errors = []
        if args.download:
            errors = download_missing(items, progress=not args.no_progress)
            items = target_items(target, overrides, args.sd2_model_id)  # as resolved now
        errors += verify(items) if args.verify else []
    except UserError as err:
        print(f"python -m dps_map.weights: error: {err}", file=sys.stderr)
        return 2
    try:
        print(report(target, items, overrides), flush=True)
    except BrokenPipeError:  # `... | head`: the reader is gone
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    for line in errors:  # last, below the list
        print(f"python -m dps_map.weights: error: {line}", file=sys.stderr)
    return 0 if all(it.present for it in items) and not errors else 1


if __name__ == "__main__":
    sys.exit(main())
