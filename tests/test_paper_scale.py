"""The paper-scale path: ImageNet class labels from the data, preflight, every sampler on a
class-conditional ADM with the adm512 flags scaled down, ADM's fp16 UNet, the +experiment=paper preset.
The real-size 512 network runs end to end in tests/test_adm512_full.py (marked slow)."""

import json
import math
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from dps_map.config.sweep import compose_job, without_hydra
from dps_map.config.targets import build_prior
from dps_map.data import folder_items, imagenet_wnids, read_labels_file
from dps_map.errors import ConfigError, UserError
from dps_map.io import read_jsonl
from dps_map.operators import SuperResolution
from dps_map.preflight import main as preflight_main
from dps_map.run import main as run_main
from dps_map.runner import run

from support import png_psnr

# the adm512 flags (attention at 32,16,8, learned sigma, class-conditional, 64 head channels scaled to 16)
# at 64x64 with 32 channels; random weights with the zero-initialised layers re-drawn (eps depends on x, t, y)
TOY = ["prior=adm512", "prior.random_init=true", "prior.unet.image_size=64", "prior.unet.num_channels=32",
       "prior.unet.num_head_channels=16", 'prior.unet.channel_mult="1,2,3,4"', "progress=false", "metrics=fast"]
# well-known ILSVRC-2012 class indices (the order of ADM's and torchvision's ImageFolder labels)
KNOWN = {"n01440764": 0, "n01443537": 1, "n01514859": 8, "n02123045": 281, "n04254680": 805,
         "n09472597": 980, "n15075141": 999}



def _image(path, seed):
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray((rng.random((70, 80, 3)) * 255).astype("uint8")).save(path)


@pytest.fixture
def imagefolder(tmp_path):
    """<root>/<wnid>/<file>: three ImageNet-val-like files in two classes (file order != class order)."""
    root = tmp_path / "val"
    for n, (wnid, stem) in enumerate([("n09472597", "ILSVRC2012_val_00000001"),
                                      ("n01443537", "ILSVRC2012_val_00000002"),
                                      ("n09472597", "ILSVRC2012_val_00000003")]):
        _image(root / wnid / f"{stem}.JPEG", n)
    return root


def compose(*overrides):
    return without_hydra(compose_job(list(overrides)))


# -- class labels -------------------------------------------------------------------------------------
def test_the_1000_wnids_in_class_index_order():
    wnids = imagenet_wnids()
    assert len(wnids) == 1000 == len(set(wnids)) and list(wnids) == sorted(wnids)
    assert all(wnids[i] == w for w, i in KNOWN.items())


def test_imagefolder_layout_gives_each_image_its_class(imagefolder):
    items = folder_items(imagefolder, 32)
    assert [(it.id, it.label) for it in items] == [("n09472597__ILSVRC2012_val_00000001", 980),
                                                   ("n01443537__ILSVRC2012_val_00000002", 1),
                                                   ("n09472597__ILSVRC2012_val_00000003", 980)]
    # max_images takes the first files by file name (ImageNet val order), not the first class folders
    assert [it.id for it in folder_items(imagefolder, 32, max_images=2)] == [it.id for it in items[:2]]


def test_labels_files_solution_csv_and_plain(tmp_path):
    csv = tmp_path / "LOC_val_solution.csv"
    csv.write_text("ImageId,PredictionString\nILSVRC2012_val_00000001,n09472597 1 2 3 4 n09472597 5 6 7 8\n"
                   "ILSVRC2012_val_00000002,n02123045 0 0 10 10\n")
    assert read_labels_file(csv) == {"ILSVRC2012_val_00000001": 980, "ILSVRC2012_val_00000002": 281}
    plain = tmp_path / "labels.txt"
    plain.write_text("a.png,7\n\nb,n15075141\n")
    assert read_labels_file(plain) == {"a": 7, "b": 999}
    for bad, expected in [("a,1000\n", "class index in [0, 1000)"), ("a,n99999999\n", "not an ILSVRC-2012 wnid"),
                          ("a\n", "expected 'file_stem,index'"), ("\n", "holds no labels")]:
        plain.write_text(bad)
        with pytest.raises(ConfigError, match=expected.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")):
            read_labels_file(plain)
    with pytest.raises(UserError, match="data.labels="):
        read_labels_file(tmp_path / "missing.csv")


def test_run_records_each_images_class_label(imagefolder, tmp_path):
    cfg = compose(*TOY, "task=sr4", "sampler=ddpm", "sampler.respacing=2", "data=folder", f"data.path={imagefolder}")
    assert cfg.prior.class_label == "data"  # the adm512 default
    run(cfg, tmp_path / "run")
    got = {r["id"]: r["class_label"] for r in read_jsonl(tmp_path / "run" / "metrics.jsonl")}
    assert got == {"n09472597__ILSVRC2012_val_00000001": 980, "n01443537__ILSVRC2012_val_00000002": 1,
                   "n09472597__ILSVRC2012_val_00000003": 980}


def test_labels_file_for_a_flat_folder_and_int_and_random_labels(tmp_path):
    flat = tmp_path / "flat"
    for n in range(2):
        _image(flat / f"ILSVRC2012_val_0000000{n + 1}.png", n)
    labels = tmp_path / "labels.csv"
    labels.write_text("ILSVRC2012_val_00000001,n02123045\nILSVRC2012_val_00000002,805\n")
    base = [*TOY, "task=sr4", "sampler=ddpm", "sampler.respacing=2", "data=folder", f"data.path={flat}"]
    recorded = {}
    for name, extra in [("file", [f"data.labels={labels}"]), ("int", ["prior.class_label=7"]),
                        ("random", ["prior.class_label=random"]), ("random2", ["prior.class_label=random"])]:
        run(compose(*base, *extra), tmp_path / name)
        recorded[name] = [r["class_label"] for r in sorted(read_jsonl(tmp_path / name / "metrics.jsonl"),
                                                          key=lambda r: r["id"])]
    assert recorded["file"] == [281, 805]
    assert recorded["int"] == [7, 7]
    assert recorded["random"] == recorded["random2"] and all(0 <= c < 1000 for c in recorded["random"])


def _no_model(*args, **kwargs):
    raise AssertionError("a model was built before validation failed")


@pytest.mark.parametrize("layout,extra,expected", [
    ("missing", [], "1 of 4 images have no class label"),
    ("unknown", [], "'n99999999' is not one of the 1000 ILSVRC-2012 classes"),
    ("demo", [], "data=demo has none"),
    ("ok", ["prior.class_label=1000"], "prior.class_label must be 'data'"),
])
def test_missing_or_unknown_label_stops_at_start_up(imagefolder, tmp_path, monkeypatch, capsys, layout, extra,
                                                    expected):
    if layout == "missing":
        _image(imagefolder / "loose.png", 9)  # not in a wnid folder, no labels file
    if layout == "unknown":
        _image(imagefolder / "n99999999" / "x.png", 9)
    data = [] if layout == "demo" else ["data=folder", f"data.path={imagefolder}"]
    args = [*TOY, "task=sr4", "sampler=dps", *data, *extra, f"hydra.run.dir={tmp_path / 'run'}"]
    monkeypatch.setattr(sys, "argv", ["dps-map", *args])
    monkeypatch.setattr("dps_map.runner.execute.build_prior", _no_model)
    with pytest.raises(SystemExit) as stop:
        run_main()
    err = capsys.readouterr().err
    assert stop.value.code == 2 and err.count("\n") == 1 and expected in err, err
    assert not (tmp_path / "run").exists()


# -- every sampler through the runner on a class-conditional ADM ----------------------------------------
def _toy_adapter(tmp_path, cfg) -> str:
    """An adapter for the toy prior with its zero convolutions perturbed (as after training)."""
    from dps_map.adapters.adm_controlnet import Adapter, adapter_checkpoint

    prior = build_prior(cfg.prior)
    adapter = Adapter(prior.model, hint_channels=4)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for conv in [*adapter.zero_convs, adapter.middle_zero, adapter.hint[-1]]:
            conv.weight.copy_(torch.randn(conv.weight.shape, generator=g) * 0.05)
    path = tmp_path / "adapter.pt"
    op = SuperResolution(4)
    torch.save(adapter_checkpoint(adapter, operator={"class": type(op).__name__, **op.describe()}), path)
    return str(path)


N, K = 3, 2  # diffusion steps, DMAP inner steps
#: (forward, VJP) calls per chain of N steps: DMAP's last step returns the sphere's centre (no inner steps)
CALLS = {"ddpm": (N, 0), "dps": (0, N), "dsg": (0, N), "dmap": (N, K * (N - 1)), "dmap_adam": (N, K * (N - 1)),
         "adapter": (N, 0), "adapter_dps": (0, N), "adapter_dmap": (N, K * (N - 1))}


def test_every_sampler_runs_on_a_class_conditional_adm(imagefolder, tmp_path):
    base = [*TOY, "task=sr4", "data=folder", f"data.path={imagefolder}", "data.max_images=2", f"sampler.respacing={N}"]
    adapter = _toy_adapter(tmp_path, compose(*base))
    for name, (fwd, vjp) in CALLS.items():
        extra = [f"sampler.num_inner={K}"] if "dmap" in name else []
        extra += [f"sampler.adapter={adapter}"] if name.startswith("adapter") else []
        out = tmp_path / name
        summary = run(compose(*base, f"sampler={name}", *extra), out)
        records = read_jsonl(out / "metrics.jsonl")
        assert summary["n_samples"] == 2 and summary["n_failed"] == 0, name
        assert {(r["forward"], r["vjp"]) for r in records} == {(fwd, vjp)}, name
        assert {r["class_label"] for r in records} == {980, 1}, name
        for r in records:  # each record's PSNR is its own sample's against its own image
            assert abs(r["psnr"] - png_psnr(out / "recon" / f"{r['id']}_{r['k']}.png",
                                            out / "label" / f"{r['id']}.png")) < 0.1, (name, r)


def test_the_class_label_reaches_the_network(imagefolder, tmp_path):
    """The same measurement and noise with another class gives another sample (eps depends on y)."""
    base = [*TOY, "task=sr4", "sampler=ddpm", "sampler.respacing=3", "data=folder", f"data.path={imagefolder}",
            "data.max_images=1"]
    images = []
    for label in (1, 980):
        run(compose(*base, f"prior.class_label={label}"), tmp_path / str(label))
        images.append(np.asarray(Image.open(next((tmp_path / str(label) / "recon").glob("*.png")))).astype(int))
    assert np.abs(images[0] - images[1]).max() > 2


# -- +experiment=paper ----------------------------------------------------------------------------------
def test_paper_preset_composes_and_runs_scaled_down(imagefolder, tmp_path):
    """The preset itself: adm512 class-conditional with labels from the data, precision auto (fp16 on a GPU,
    fp32 here), noiseless, 1000 steps and every metric (random metric networks here: the weights are not on
    this machine)."""
    cfg = compose("+experiment=paper", "task=sr4", "sampler=dps")
    assert (cfg.prior.name, cfg.prior.class_label, cfg.prior.unet.use_fp16) == ("adm512", "data", False)
    assert cfg.perf.precision == "auto"
    assert (cfg.data.name, cfg.data.max_images, cfg.task.sigma_y, cfg.sampler.respacing) == \
        ("imagenet_val", 1000, 0.0, "1000")
    assert set(cfg.metrics.names) >= {"psnr", "ssim", "lpips", "fid", "kid"}
    small = [o for o in TOY if not o.startswith(("prior=", "metrics="))]
    summary = run(compose("+experiment=paper", *small, "task=sr4", "sampler=dps", "sampler.respacing=2",
                          f"paths.imagenet_val={imagefolder}", "metrics.random_weights=true"), tmp_path / "paper")
    assert summary["n_samples"] == 3 and summary["n_failed"] == 0
    assert (summary["precision"], summary["device_type"]) == ("fp32", "cpu")  # auto never computes fp16 on a CPU
    assert {r["class_label"] for r in read_jsonl(tmp_path / "paper" / "metrics.jsonl")} == {980, 1}
    assert {"lpips", "fid", "kid"} <= set(summary["metrics"])


# -- ADM's fp16 UNet and mixed precision: the samplers stay in float32 ------------------------------------
# The adm512 flags smaller still (16x16, two levels, attention at both): a CPU without AVX512-FP16 computes fp16
# ~40x slower than fp32, and these checks need the fp16 code path (convert_to_fp16, fp16 attention), not the size.
SMALL_SIZE = 16
SMALL = [o for o in TOY if not o.startswith(("prior.unet.image_size", "prior.unet.num_channels",
                                              "prior.unet.num_head_channels", "prior.unet.channel_mult"))]
SMALL += [f"prior.unet.image_size={SMALL_SIZE}", "prior.unet.num_channels=32", "prior.unet.num_head_channels=16",
          'prior.unet.channel_mult="1,2"', "prior.unet.num_res_blocks=1"]


def _small_prior(*extra):
    return build_prior(compose(*SMALL, *extra).prior)


def test_use_fp16_converts_the_torso_and_returns_float32(imagefolder):
    prior16, prior32 = _small_prior("prior.unet.use_fp16=true"), _small_prior()
    unet = prior16.model
    assert unet.dtype == torch.float16 and unet.input_blocks[1][0].in_layers[2].weight.dtype == torch.float16
    assert unet.out[-1].weight.dtype == torch.float32  # convert_to_fp16 keeps the output layer in fp32
    assert any(type(m).__name__ == "AttentionBlock" for m in unet.modules())  # fp16 attention is on the path
    for p in (prior16, prior32):
        p.set_class_labels(5)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, SMALL_SIZE, SMALL_SIZE, generator=g)
    t = torch.tensor([900, 100])
    x_in = x.clone().requires_grad_(True)
    eps16, var16 = prior16.predict(x_in, t)
    assert eps16.dtype == var16.dtype == torch.float32
    (grad,) = torch.autograd.grad(eps16.square().sum(), x_in)
    assert grad.dtype == torch.float32
    x32 = x.clone().requires_grad_(True)
    eps32, _ = prior32.predict(x32, t)  # same weights (same seed) in fp32
    rel = ((eps16 - eps32).norm() / eps32.norm()).item()
    assert rel < 2e-2, rel
    (grad32,) = torch.autograd.grad(eps32.square().sum(), x32)  # the gradient flows through the fp16 torso
    rel = ((grad - grad32).norm() / grad32.norm()).item()
    assert rel < 5e-2, rel


# (fp16 under autocast, what perf.precision=auto gives on a GPU, is checked on a small UNet in test_perf_knobs.py:
# a CPU without AVX512-FP16 runs it tens of times slower than these)
@pytest.mark.parametrize("precision", [["prior.unet.use_fp16=true", "perf.precision=fp16"], ["perf.precision=bf16"]])
@pytest.mark.parametrize("method", ["dps", "dmap"])
def test_sampler_state_stays_float32_under_half_precision_networks(precision, method):
    from dps_map.config.targets import build_sampler
    from dps_map.operators import GaussianNoise
    from dps_map.runner import make_prior

    cfg = compose(*SMALL, f"sampler={method}", "sampler.respacing=3", *precision)
    prior = make_prior(cfg, torch.device("cpu"))
    prior.set_class_labels(3)
    op, noise = SuperResolution(4), GaussianNoise(0.05)
    g = torch.Generator().manual_seed(0)
    shape = (1, 3, SMALL_SIZE, SMALL_SIZE)
    y = op(torch.rand(*shape, generator=g) * 2 - 1)
    sampler = build_sampler(cfg.sampler)
    seen = []
    result = sampler.run(prior, op, noise, y, shape, g, hooks=[seen.append])
    x = result.x0
    assert x.dtype == torch.float32 and torch.isfinite(x).all()
    assert result.last_misfit.dtype == torch.float32 and torch.isfinite(result.last_misfit).all()
    for step in seen:
        tensors = [step.x_t, step.x0_hat, step.eps, step.mean, step.x_prev] + ([step.grad] if step.grad is not None
                                                                               else [])
        assert all(v.dtype == torch.float32 for v in tensors)
    assert any(step.grad is not None for step in seen)


# -- preflight ------------------------------------------------------------------------------------------
def test_preflight_checks_times_and_prices_a_sweep(imagefolder, tmp_path, capsys):
    with pytest.raises(SystemExit) as stop:
        preflight_main(["--steps", "2", "--out", str(tmp_path / "pf"), "-m", *TOY, "task=sr4", "sampler=dps,dmap",
                        "data=folder", f"data.path={imagefolder}", "data.num_shards=2", "data.shard=0,1",
                        "sampler.respacing=50"])
    assert stop.value.code == 0, capsys.readouterr().err
    report = json.loads((tmp_path / "pf" / "preflight.json").read_text())
    jobs = report["jobs"]
    assert [(j["sampler"], j["n_images"]) for j in jobs] == [("dps", 2), ("dps", 1), ("dmap", 2), ("dmap", 1)]
    for j in jobs:
        assert j["seconds_per_step"] > 0 and math.isfinite(j["seconds_per_step"]) and j["peak_memory_bytes"] > 0
        assert j["steps"] == 50 and j["steps_timed"] == 2 and j["fits"] is True
        assert (j["forward_per_step"], j["vjp_per_step"]) == ((0, 1) if j["sampler"] == "dps" else (1, 3))
        assert j["measured_hours"] == pytest.approx(j["n_images"] * 50 * j["seconds_per_step"] / 3600)
        assert j["projected_hours"] is None  # CPU time is not GPU time
    assert report["total_measured_hours"] == pytest.approx(sum(j["measured_hours"] for j in jobs))
    assert report["total_projected_hours"] is None
    out = capsys.readouterr().out
    assert "CPU time" in out and "no GPU-hours projected" in out and "| dmap |" in out


def test_preflight_reports_every_problem_of_every_job_and_runs_nothing(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("dps_map.runner.execute.build_prior", _no_model)
    with pytest.raises(SystemExit) as stop:
        preflight_main(["--out", str(tmp_path / "pf"), "prior=adm512", f"paths.adm512={tmp_path / 'none.pt'}",
                        "task=sr4,sr8", "sampler=dps,adapter_dmap", "data=folder", f"data.path={tmp_path / 'nodata'}",
                        "prior.class_label=3"])
    err = capsys.readouterr().err
    assert stop.value.code == 2
    assert "every job: missing ADM ImageNet 512x512" in err and str(tmp_path / "none.pt") in err
    assert "every job: missing image folder" in err and str(tmp_path / "nodata") in err
    assert "job 1 of 4: missing adapter checkpoint" in err and "sr4_adm512.pt" in err
    assert "job 3 of 4: missing adapter checkpoint" in err and "sr8_adm512.pt" in err
    report = json.loads((tmp_path / "pf" / "preflight.json").read_text())
    assert report["n_jobs"] == 4 and report["n_invalid"] == 4 and "total_projected_hours" not in report


def test_preflight_spreads_over_the_slurm_array_and_flags_the_time_limit(imagefolder, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("DPS_MAP_SLURM_TIME_MIN", "1")
    monkeypatch.setenv("DPS_MAP_SLURM_MAX_JOBS", "3")
    monkeypatch.setattr("dps_map.preflight.CALIBRATED_PRIOR", ("adm512", 64))  # TOY stands in for the 512 px adm512
    gpu_check = tmp_path / "gpu_check.json"  # GPU-hours (what the time limit is about) from a GPU's s/step
    gpu_check.write_text(json.dumps({"parts": {"E": {"status": "ok", "device_name": "a GPU",
                                                     "results": {"ddpm": {"s_per_step": 0.05, "batch": 1}}}}}))
    with pytest.raises(SystemExit) as stop:
        preflight_main(["--steps", "1", "--out", str(tmp_path / "pf"), "--calibration", str(gpu_check), "-m",
                        "hydra/launcher=slurm", *TOY, "task=sr4", "sampler=ddpm", "data=folder",
                        f"data.path={imagefolder}", "sampler.respacing=1000"])
    err = capsys.readouterr().err
    assert stop.value.code == 0, err
    report = json.loads((tmp_path / "pf" / "preflight.json").read_text())
    (job,) = report["jobs"]
    assert report["devices"] == 3 and job["steps"] == 1000 and job["n_images"] == 3
    assert job["projected_hours"] == pytest.approx(3 * 1000 * 0.05 / 3600)  # 2.5 min
    expected = math.ceil(job["projected_hours"] * 60) - 1  # 1-minute limit
    assert job["requeues_needed"] == expected >= 1
    assert "over the launcher's time limit" in err and ("will not finish" in err) == (expected > 3)
