"""The demo driver: tables, grids and the GMM picture (at toy sizes)."""

from PIL import Image

from dps_map.demo import format_table, gmm_demo, image_demo


def test_image_demo_writes_grid_and_table(tmp_path, capsys):
    rows = image_demo(tmp_path, tasks=("inpaint_box",), extra=["data.per_photo=1", "sampler.respacing=3"])
    shown = capsys.readouterr()
    # one progress display: one line per finished run and a total bar (no per-run bars from the workers)
    done = [line for line in (shown.out + shown.err).splitlines() if line.startswith("done  inpaint_box/tiny/")]
    assert sorted(line.split()[1] for line in done) == ["inpaint_box/tiny/dmap:", "inpaint_box/tiny/dps:"]
    assert "demo: 2 restorations" in shown.err and "meas" not in shown.err
    assert [(r["task"], r["sampler"]) for r in rows] == [("inpaint_box", "dps"), ("inpaint_box", "dmap")]
    grid = Image.open(tmp_path / "inpaint_box.png")
    # 2 crops (one per held-out photo) x 4 rows (measurement, dps, dmap, truth) of 64 px tiles
    assert grid.size == (2 * 66 + 2, 4 * 66 + 2)
    assert (tmp_path / "inpaint_box" / "dmap" / "summary.json").exists()
    table = format_table(rows)
    assert table.count("\n") == 3 and "inpaint_box | dmap" in table


def test_gmm_demo_picture(tmp_path):
    path = gmm_demo(tmp_path, num_samples=100)
    assert Image.open(path).size[0] > 1000
    for name in ("exact", "oracle", "dps", "dmap"):
        assert (tmp_path / "gmm2d" / name / "samples.npy").exists()
