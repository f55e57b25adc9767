"""The Python API (dps_map.load_prior, example_image, save_image, psnr) and the README snippet that uses it."""

import re
import sys

import pytest
import torch

import dps_map
from dps_map.errors import MissingFileError

from support import CONF, ROOT, run_with_guard


def readme_snippet() -> str:
    """The first python block of README.md's "Use it from Python" section."""
    text = (ROOT / "README.md").read_text()
    section = text.split("\n## Use it from Python\n", 1)[1].split("\n## ", 1)[0]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_readme_snippet_restores_an_image(tmp_path):
    code = readme_snippet()
    assert len(code.strip().splitlines()) <= 15  # the promise of the README: under 15 lines
    proc = run_with_guard([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, cpu_limit=300,
                          env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0, proc.stderr
    ours, bicubic = map(float, re.fullmatch(r"PSNR (\S+) dB, bicubic (\S+) dB\n", proc.stdout).groups())
    assert ours > bicubic  # the prior adds detail bicubic upsampling cannot (21.3 vs 20.1 dB when written)
    from PIL import Image

    assert Image.open(tmp_path / "restored.png").size == (64, 64)


def test_load_prior_by_name_yaml_and_checkpoint_with_card_agree():
    x, t = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0)), torch.tensor([10, 700])
    by_name = dps_map.load_prior("tiny")
    by_card = dps_map.load_prior(dps_map.ASSETS / "tiny_prior.pt")
    by_yaml = dps_map.load_prior(CONF / "prior" / "tiny.yaml")
    expect = by_name.predict(x, t)[0]
    for other in (by_card, by_yaml):
        torch.testing.assert_close(other.predict(x, t)[0], expect, rtol=0, atol=0)
    assert not any(p.requires_grad for p in by_name.parameters())


def test_load_prior_missing_checkpoint_names_the_file_and_the_override(tmp_path):
    with pytest.raises(MissingFileError) as err:
        dps_map.load_prior("adm512", checkpoint=str(tmp_path / "512x512_diffusion.pt"))
    assert str(tmp_path / "512x512_diffusion.pt") in str(err.value) and "paths.adm512=" in str(err.value)
    with pytest.raises(AttributeError):
        dps_map.no_such_function  # noqa: B018


def test_example_image_and_save_image(tmp_path):
    x = dps_map.example_image("chelsea", size=32)
    assert x.shape == (1, 3, 32, 32) and -1 <= x.min() and x.max() <= 1
    dps_map.save_image(torch.cat([x, -x]), tmp_path / "pair.png")
    from PIL import Image

    assert Image.open(tmp_path / "pair.png").size == (64, 32)
    assert dps_map.psnr(x, x).isinf().all()
