"""The demo driver: tables, the labelled task pictures and the GMM picture (at toy sizes)."""

import json

import numpy as np
import pytest
from PIL import Image

from dps_map.demo import format_table, gmm_demo, gmm_figure, grid_figure, image_demo, psnr_caption, task_figure

from support import png_psnr


def nearest(path_or_tile, px):
    """A tile enlarged to px x px by PIL's nearest-neighbour resize (the reference for the pictures' tiles)."""
    img = Image.open(path_or_tile) if not isinstance(path_or_tile, np.ndarray) else Image.fromarray(path_or_tile)
    return np.asarray(img.convert("RGB").resize((px, px), Image.NEAREST))


def tile_crops(fig, png) -> list[np.ndarray]:
    """The pixels of each axes of `fig` in its saved PNG (row-major, as fig.axes)."""
    img = np.asarray(Image.open(png).convert("RGB"))
    assert img.shape[:2] == (round(fig.get_figheight() * 100), round(fig.get_figwidth() * 100))
    crops = []
    for ax in fig.axes:
        box = ax.get_window_extent()
        top, left = img.shape[0] - round(box.y1), round(box.x0)
        crops.append(img[top:top + round(box.height), left:left + round(box.width)])
    return crops


def test_grid_figure_labels_and_tiles(tmp_path):
    rng = np.random.default_rng(0)
    tiles = [[rng.integers(0, 256, (s, s, 3), dtype=np.uint8) for _ in range(3)] for s in (8, 16, 16)]
    rows = [("measurement", tiles[0], [None] * 3), ("DPS", tiles[1], ["a", "b", "c"]), ("truth", tiles[2], [None] * 3)]
    fig = grid_figure("the title", ["x", "y", "z"], rows, tile_px=48)
    assert len(fig.axes) == 9
    assert [ax.get_title() for ax in fig.axes] == ["x", "y", "z"] + [""] * 6
    assert [ax.get_ylabel() for ax in fig.axes] == ["measurement", "", "", "DPS", "", "", "truth", "", ""]
    assert [ax.get_xlabel() for ax in fig.axes] == ["", "", "", "a", "b", "c", "", "", ""]
    assert fig.texts[0].get_text() == "the title"  # the suptitle
    fig.savefig(tmp_path / "grid.png", dpi=100)
    # each tile is in the saved picture pixel for pixel, enlarged x6 (8 px) or x3 (16 px) by nearest neighbour
    for crop, tile in zip(tile_crops(fig, tmp_path / "grid.png"), [t for row in tiles for t in row]):
        np.testing.assert_array_equal(crop, nearest(tile, 48))
    with pytest.raises(ValueError, match="whole factor"):
        grid_figure("t", ["x"], [("r", [tiles[1][0]], [None])], tile_px=40)


def test_psnr_caption():
    assert psnr_caption({"psnr": 21.004}) == "PSNR 21.00 dB"
    assert psnr_caption({"psnr": None, "failed": True}) == "failed"
    assert psnr_caption(None) == "no PSNR"


def test_image_demo_writes_grid_and_table(tmp_path, capsys):
    rows = image_demo(tmp_path, tasks=("inpaint_box",), extra=["data.per_photo=1", "sampler.respacing=3"])
    shown = capsys.readouterr()
    # one progress display: one line per finished run and a total bar (no per-run bars from the workers)
    done = [line for line in (shown.out + shown.err).splitlines() if line.startswith("done  inpaint_box/tiny/")]
    assert sorted(line.split()[1] for line in done) == ["inpaint_box/tiny/dmap:", "inpaint_box/tiny/dps:"]
    assert "demo: 2 restorations" in shown.err and "meas" not in shown.err
    assert [(r["task"], r["sampler"]) for r in rows] == [("inpaint_box", "dps"), ("inpaint_box", "dmap")]
    assert (tmp_path / "inpaint_box" / "dmap" / "summary.json").exists()
    table = format_table(rows)
    assert table.count("\n") == 3 and "inpaint_box | dmap" in table

    # the picture: 2 crops (one per held-out photo) x 4 rows (measurement, dps, dmap, truth), labelled
    fig = task_figure(tmp_path, "inpaint_box")
    assert [ax.get_title() for ax in fig.axes[:2]] == ["chelsea, crop 0", "coffee, crop 0"]
    assert [ax.get_ylabel() for ax in fig.axes[::2]] == ["measurement", "DPS", "DMAP", "ground truth"]
    crops = tile_crops(fig, tmp_path / "inpaint_box.png")  # the saved picture is this figure
    runs = tmp_path / "inpaint_box"
    for row, sampler in ((1, "dps"), (2, "dmap")):
        records = {r["id"]: r for r in map(json.loads, (runs / sampler / "metrics.jsonl").read_text().splitlines())}
        for col, ident in enumerate(("chelsea_0", "coffee_0")):
            ax, recon = fig.axes[2 * row + col], runs / sampler / "recon" / f"{ident}_0.png"
            # the restored tile is the saved sample enlarged x3, its PSNR the record's, to 2 decimals
            np.testing.assert_array_equal(crops[2 * row + col], nearest(recon, 192))
            assert ax.get_xlabel() == f"PSNR {records[ident]['psnr']:.2f} dB"
            assert abs(records[ident]["psnr"] - png_psnr(recon, runs / "dps" / "label" / f"{ident}.png")) < 0.1
    for col, ident in enumerate(("chelsea_0", "coffee_0")):
        np.testing.assert_array_equal(crops[col], nearest(runs / "dps" / "input" / f"{ident}.png", 192))
        np.testing.assert_array_equal(crops[6 + col], nearest(runs / "dps" / "label" / f"{ident}.png", 192))
        assert fig.axes[col].get_xlabel() == fig.axes[6 + col].get_xlabel() == ""


def test_gmm_figure_labels():
    rng = np.random.default_rng(0)
    samples = {name: rng.normal(size=(20, 2)) for name in ("exact", "dps")}
    metrics = {"exact": {"sliced_wasserstein": 0.01, "log_posterior": -1.5},
               "dps": {"sliced_wasserstein": 0.2, "log_posterior": -3.25}}
    grid = np.linspace(-1, 1, 5)
    fig = gmm_figure(samples, metrics, grid, np.ones((5, 5)), np.zeros((3, 2)), "the title")
    assert [ax.get_title() for ax in fig.axes] == ["exact\nSW=0.010  log p=-1.50", "dps\nSW=0.200  log p=-3.25"]
    assert [ax.get_xlabel() for ax in fig.axes] == ["$x_1$", "$x_1$"]
    assert fig.axes[0].get_ylabel() == "$x_2$"
    legend = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert legend == ["prior means", "samples", "exact posterior density"]
    assert fig.texts[0].get_text() == "the title"
    fig.canvas.draw()  # every label lies inside the picture (none cut off at an edge)
    frame = fig.bbox
    for text in [fig.texts[0], fig.axes[0].yaxis.label] + [ax.xaxis.label for ax in fig.axes]:
        box = text.get_window_extent()
        assert frame.x0 <= box.x0 and box.x1 <= frame.x1 and frame.y0 <= box.y0 and box.y1 <= frame.y1, text


def test_gmm_demo_picture(tmp_path):
    path = gmm_demo(tmp_path, num_samples=100)
    assert Image.open(path).size[0] > 1000
    for name in ("exact", "oracle", "dps", "dmap"):
        assert (tmp_path / "gmm2d" / name / "samples.npy").exists()
