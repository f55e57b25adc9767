"""`python -m dps_map.weights`: listing, --download and its checks, offline.

Every URL here is a file:// stand-in: a guard makes any other URL opened through urllib (torch.hub's
downloader included) fail the test, and huggingface_hub's network calls are replaced by local copies.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
import urllib.request
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image

from dps_map import weights
from dps_map.errors import MissingFileError
from dps_map.metrics import weight_files as metric_weights
from dps_map.priors.latent import NETWORK_FILES, TEXT_FILES, TOKENIZER_VOCABS, check_folder

from support import CONF

OPENAI = "https://openaipublic.blob.core.windows.net/diffusion/jul-2021/"


@pytest.fixture(autouse=True)
def offline(monkeypatch, tmp_path):
    """No network: urllib may open file:// URLs only; the torch hub cache and the env point into tmp_path."""
    real = urllib.request.urlopen

    def file_only(url, *args, **kwargs):
        full = url.full_url if isinstance(url, urllib.request.Request) else str(url)
        assert full.startswith("file:"), f"a test tried to open {full}"
        return real(url, *args, **kwargs)

    monkeypatch.setattr(urllib.request, "urlopen", file_only)
    monkeypatch.setattr(torch.hub, "urlopen", file_only)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    for var in ("DPS_MAP_CHECKPOINTS", "DPS_MAP_ADM512", "DPS_MAP_ADM256_UNCOND", "DPS_MAP_ADM128_512_UPSAMPLER",
                "DPS_MAP_LPIPS_BACKBONE", "DPS_MAP_FID_INCEPTION", "DPS_MAP_IMAGENET_VAL",
                "DPS_MAP_IMAGENET_VAL_LABELS", "DPS_MAP_SD2_BASE"):
        monkeypatch.delenv(var, raising=False)


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _stand_in(path: Path, n: int = 4000, seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(np.random.default_rng(seed).bytes(n))
    return path


def _serve_metric_weights(monkeypatch, tmp_path, corrupt: str | None = None) -> dict[str, Path]:
    """Point every downloadable WEIGHT_FILES entry at a file:// stand-in with its size and sha256 prefix
    (the stand-in of `corrupt` is changed after its digest was recorded)."""
    served = {}
    for n, (key, entry) in enumerate(metric_weights.WEIGHT_FILES.items()):
        if not entry.url.startswith("https://"):
            continue
        src = _stand_in(tmp_path / "server" / entry.filename, 3000 + n, seed=n)
        size, prefix = src.stat().st_size, _digest(src)[:8]
        if key == corrupt:
            src.write_bytes(src.read_bytes()[:-1] + b"?")  # same size, other bytes
        monkeypatch.setitem(metric_weights.WEIGHT_FILES, key, dataclasses.replace(
            entry, url=src.as_uri(), size=size, size_tolerance=0, sha256_prefix=prefix))
        served[key] = src
    return served


def _imagenet(tmp_path: Path) -> tuple[Path, Path]:
    """A flat ImageNet val stand-in (two images) and its LOC_val_solution.csv."""
    val = tmp_path / "val"
    val.mkdir()
    for i in (1, 2):
        Image.new("RGB", (8, 8), (i * 40, 0, 0)).save(val / f"ILSVRC2012_val_{i:08d}.JPEG")
    labels = tmp_path / "LOC_val_solution.csv"
    labels.write_text("ImageId,PredictionString\nILSVRC2012_val_00000001,n01440764 1 2 3 4\n"
                      "ILSVRC2012_val_00000002,n01443537 1 2 3 4\n")
    return val, labels


def _blocks(out: str) -> dict[str, str]:
    """The report's blocks keyed by their first line's text (without the status)."""
    blocks, current = {}, None
    for line in out.splitlines():
        if line.startswith(("present ", "MISSING ")):
            current = line[9:]
            blocks[current] = line
        elif current and line.startswith("         "):
            blocks[current] += "\n" + line
        else:
            current = None
    return blocks


def test_paper_lists_path_status_size_sha256_and_url(tmp_path, capsys):
    ck = tmp_path / "ck"
    adm512 = _stand_in(ck / "512x512_diffusion.pt", 1234)
    val, labels = _imagenet(tmp_path)
    code = weights.main(["paper", f"paths.checkpoints={ck}", f"paths.imagenet_val={val}",
                         f"paths.imagenet_val_labels={labels}"])
    out = capsys.readouterr().out
    assert code == 1  # the upsampler and the metric backbones are missing
    blocks = _blocks(out)
    adm = next(b for k, b in blocks.items() if "512x512_diffusion.pt" in k)
    assert adm.startswith("present") and str(adm512) in adm and "1234 bytes" in adm
    assert "sha256  not published" in adm and f"url     {OPENAI}512x512_diffusion.pt" in adm
    up = next(b for k, b in blocks.items() if "128_512_upsampler.pt" in k)
    assert up.startswith("MISSING") and str(ck / "128_512_upsampler.pt") in up and f"{OPENAI}128_512_upsampler.pt" in up
    alex = blocks["LPIPS AlexNet backbone (torchvision ImageNet weights)"]
    assert alex.startswith("MISSING") and str(tmp_path / "torch" / "hub" / "checkpoints" / "alexnet-owt-7be5be79.pth") in alex
    assert "7be5be79... (first 8 hex digits" in alex and "https://download.pytorch.org/models/alexnet-owt-7be5be79.pth" in alex
    fid = blocks["FID Inception-v3 weights (pytorch-fid)"]
    assert "6726825d..." in fid and ("https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/"
                                     "pt_inception-2015-12-05-6726825d.pth") in fid
    assert blocks["image folder of data=imagenet_val"].startswith("present")
    assert "2 images" in blocks["image folder of data=imagenet_val"]
    assert blocks["class labels of the ImageNet val images"].startswith("present")
    assert "4 missing can be downloaded: python -m dps_map.weights paper --download" not in out  # 3: up, alex, fid
    assert "3 missing can be downloaded" in out and "vgg16" not in out  # metrics.lpips_net=alex


def test_paper_without_labels_lists_them_as_manual(tmp_path, capsys):
    val, _ = _imagenet(tmp_path)
    assert weights.main(["paper", f"paths.imagenet_val={val}"]) == 1
    block = _blocks(capsys.readouterr().out)["class labels of the ImageNet val images"]
    assert block.startswith("MISSING") and "LOC_val_solution.csv" in block and "kaggle.com" in block
    assert "paths.imagenet_val_labels=" in block and "have no class label" in block


def test_every_url_is_in_one_table():
    """The prior YAMLs hold the exact URLs; the metric URLs are WEIGHT_FILES'."""
    for name, file in [("adm512", "512x512_diffusion.pt"), ("adm256_uncond", "256x256_diffusion_uncond.pt"),
                       ("adm128_512_upsampler", "128_512_upsampler.pt")]:
        assert OmegaConf.load(CONF / "prior" / f"{name}.yaml").url == OPENAI + file
    items = weights.target_items("all", [])
    urls = {it.url for it in items if it.kind == "url"}
    assert urls == {OPENAI + f for f in ("512x512_diffusion.pt", "128_512_upsampler.pt", "256x256_diffusion_uncond.pt")} \
        | {e.url for e in metric_weights.WEIGHT_FILES.values() if e.url.startswith("https://")}
    assert len({(it.kind, str(it.path)) for it in items}) == len(items)  # nothing listed twice


def test_download_fetches_checks_and_lands(tmp_path, monkeypatch, capsys):
    served = _serve_metric_weights(monkeypatch, tmp_path)
    src = served["fid_inception"]
    assert weights.remote_size(src.as_uri()) == src.stat().st_size  # the size the download is checked against
    assert weights.main(["metrics"]) == 1
    assert capsys.readouterr().out.count("MISSING ") == 3  # alex, vgg, Inception (the linear layers ship)
    assert weights.main(["metrics", "--download"]) == 0
    captured = capsys.readouterr()
    assert "100%" in captured.err  # torch.hub's progress bar ran
    hub = tmp_path / "torch" / "hub" / "checkpoints"
    for key, src in served.items():
        assert (hub / metric_weights.WEIGHT_FILES[key].filename).read_bytes() == src.read_bytes()
    assert sorted(p.name for p in hub.iterdir()) == sorted(metric_weights.WEIGHT_FILES[k].filename for k in served)
    assert captured.out.count("present ") == 5 and "MISSING" not in captured.out
    assert weights.main(["metrics", "--verify"]) == 0  # hashes match the (stand-in) published prefixes
    # the files land where the metrics look for them
    assert metric_weights.fid_inception_path() == hub / metric_weights.WEIGHT_FILES["fid_inception"].filename


def test_download_into_an_overridden_path(tmp_path, capsys):
    src = _stand_in(tmp_path / "server" / "ckpt.pt", 2000)
    dest = tmp_path / "elsewhere" / "my_adm256.pt"
    code = weights.main(["adm256", f"paths.adm256_uncond={dest}", f"prior.url={src.as_uri()}", "--download"])
    captured = capsys.readouterr()
    assert code == 0 and dest.read_bytes() == src.read_bytes()
    assert f"sha256 {_digest(src)}" in captured.err  # nothing published: printed for the record


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []


def test_corrupt_download_is_refused_and_leaves_nothing(tmp_path, monkeypatch, capsys):
    _serve_metric_weights(monkeypatch, tmp_path, corrupt="fid_inception")
    assert weights.main(["metrics", "--download"]) == 1
    captured = capsys.readouterr()
    assert "error: download of FID Inception-v3 weights" in captured.err and "refused" in captured.err
    assert "invalid hash value" in captured.err
    hub = tmp_path / "torch" / "hub" / "checkpoints"
    assert "pt_inception-2015-12-05-6726825d.pth" not in _leftovers(hub)
    assert not [n for n in _leftovers(hub) if n.endswith((".download", ".partial"))]
    assert "MISSING  FID Inception-v3 weights" in captured.out  # the others were fetched
    assert captured.out.count("present ") == 4


def test_short_or_wrong_size_download_is_refused(tmp_path, monkeypatch, capsys):
    served = _serve_metric_weights(monkeypatch, tmp_path)
    size = served["fid_inception"].stat().st_size
    monkeypatch.setattr(weights, "remote_size", lambda url: size + 10 if "pt_inception" in url else None)
    assert weights.main(["metrics", "--download"]) == 1
    err = capsys.readouterr().err
    assert f"is {size} bytes, the server announced {size + 10}" in err
    hub = tmp_path / "torch" / "hub" / "checkpoints"
    assert not [n for n in _leftovers(hub) if "pt_inception" in n]
    # a size our table records is checked too
    monkeypatch.setattr(weights, "remote_size", lambda url: None)
    entry = metric_weights.WEIGHT_FILES["fid_inception"]
    monkeypatch.setitem(metric_weights.WEIGHT_FILES, "fid_inception", dataclasses.replace(entry, size=size + 1))
    assert weights.main(["metrics", "--download"]) == 1
    assert f"is {size} bytes, expected {size + 1}: refused" in capsys.readouterr().err
    assert not [n for n in _leftovers(hub) if "pt_inception" in n]


def _sd2_repo(root: Path) -> Path:
    """A stand-in of the model repository (the file names the loader needs, small contents)."""
    vocab = TOKENIZER_VOCABS[0]
    for n, rel in enumerate(NETWORK_FILES + TEXT_FILES + vocab + weights.HUB_EXTRA_FILES + ("unet/extra.bin",)):
        f = root / rel
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text(json.dumps({"file": rel}) if rel.endswith(".json") else "x" * (100 + n))
    return root


def _fake_hub(monkeypatch, repo: Path, calls: list, lie_about: str | None = None):
    import huggingface_hub

    def snapshot_download(repo_id, local_dir, allow_patterns, **kwargs):
        calls.append((repo_id, Path(local_dir), sorted(allow_patterns)))
        for rel in allow_patterns:
            (Path(local_dir) / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(repo / rel, Path(local_dir) / rel)
        return local_dir

    def get_paths_info(self, repo_id, paths, **kwargs):
        out = []
        for rel in paths:
            digest = _digest(repo / rel) if rel != lie_about else "0" * 64
            lfs = SimpleNamespace(sha256=digest) if rel.endswith(".safetensors") else None
            out.append(SimpleNamespace(path=rel, size=(repo / rel).stat().st_size, lfs=lfs))
        return out

    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot_download)
    monkeypatch.setattr(huggingface_hub.HfApi, "get_paths_info", get_paths_info)


def test_sd2_download_wiring(tmp_path, monkeypatch, capsys):
    """What this checks: our wiring around huggingface_hub (the model id and --sd2-model-id, the folder from
    paths.sd2_base, exactly the files the loader needs, the size/sha256 checks against the hub's metadata,
    the listing afterwards). snapshot_download and HfApi.get_paths_info are replaced by a local copy, so the
    hub itself, its authentication and its mirrors are not tested."""
    repo, folder, calls = _sd2_repo(tmp_path / "repo"), tmp_path / "sd2", []
    _serve_metric_weights(monkeypatch, tmp_path)  # paper-sd2 also fetches the metric weights
    _fake_hub(monkeypatch, repo, calls)
    args = ["paper-sd2", f"paths.sd2_base={folder}", f"paths.checkpoints={tmp_path / 'ck'}"]
    assert weights.main(args) == 1
    assert "0 of 10 files" in capsys.readouterr().out and not calls
    assert weights.main(args + ["--download", "--sd2-model-id", "mirror/sd2-base"]) == 1  # ImageNet val: by hand
    out = capsys.readouterr().out
    [(model, local, files)] = calls
    needed = sorted(NETWORK_FILES + TEXT_FILES + TOKENIZER_VOCABS[0] + weights.HUB_EXTRA_FILES)
    assert model == "mirror/sd2-base" and local == folder and files == needed  # not unet/extra.bin
    assert "10 of 10 files" in out and "https://huggingface.co/mirror/sd2-base/resolve/main/<file>" in out
    assert out.count("MISSING") == 1 and "MISSING  image folder of data=imagenet_val" in out
    check_folder(folder)  # what a run checks at start-up


def test_sd2_file_with_the_wrong_sha256_is_deleted(tmp_path, monkeypatch, capsys):
    """Our check after snapshot_download (hub metadata replaced by a local stand-in, as above)."""
    repo, folder, calls = _sd2_repo(tmp_path / "repo"), tmp_path / "sd2", []
    _serve_metric_weights(monkeypatch, tmp_path)  # paper-sd2 also fetches the metric weights
    _fake_hub(monkeypatch, repo, calls, lie_about="vae/diffusion_pytorch_model.safetensors")
    assert weights.main(["paper-sd2", f"paths.sd2_base={folder}", "--download"]) == 1
    captured = capsys.readouterr()
    assert "'vae/diffusion_pytorch_model.safetensors' of stabilityai/stable-diffusion-2-base refused" in captured.err
    assert not (folder / "vae/diffusion_pytorch_model.safetensors").exists()
    assert "MISSING vae/diffusion_pytorch_model.safetensors" in captured.out


def test_missing_file_errors_name_url_and_command(tmp_path):
    with pytest.raises(MissingFileError) as err:
        metric_weights.fid_inception_path()
    msg = str(err.value)
    assert metric_weights.WEIGHT_FILES["fid_inception"].url in msg and "python -m dps_map.weights metrics --download" in msg
    with pytest.raises(MissingFileError) as err:
        check_folder(tmp_path / "nothing")
    msg = str(err.value)
    assert "https://huggingface.co/stabilityai/stable-diffusion-2-base" in msg
    assert "python -m dps_map.weights paper-sd2 --download" in msg and "paths.sd2_base=" in msg


def test_bad_usage_is_one_line_exit_2(capsys):
    with pytest.raises(SystemExit) as stop:
        weights.main(["nonsense"])
    assert stop.value.code == 2
    assert weights.main(["paper", "paths.nope=1"]) == 2
    err = capsys.readouterr().err
    assert err.strip().splitlines()[-1].startswith("python -m dps_map.weights: error: ")
    assert "Traceback" not in err
