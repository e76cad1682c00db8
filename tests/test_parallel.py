"""``bgopt -j N``: the same outputs as ``-j 1``, bit for bit, and the batch rules kept."""

from __future__ import annotations

import numpy as np
from astropy.io import fits

from bgopt_plugin.cli import main
from bgopt_plugin.data.synthetic import make_scene

FAST = ["-e", "60", "--seed", "1", "-qq"]


def _inputs(folder, n=3):
    folder.mkdir()
    for i in range(n):
        img = make_scene("dome", shape=(120, 180), seed=i).image
        fits.writeto(folder / f"m{i}.fits", np.moveaxis(img, -1, 0))
    return sorted(str(p) for p in folder.glob("*.fits"))


def test_two_workers_give_the_one_process_result(tmp_path, capsys):
    files = _inputs(tmp_path / "in")
    assert main([*files, "-o", str(tmp_path / "j1"), "-j", "1", *FAST]) == 0
    assert main([*files, "-o", str(tmp_path / "j2"), "-j", "2", *FAST[:-1]]) == 0
    out = capsys.readouterr().out
    assert out.count("_bgSubtracted.fits (factor") == 3 and "3 of 3 done, 0 skipped, 0 failed" in out
    for name in sorted(p.name for p in (tmp_path / "j1").iterdir()):
        a, ha = fits.getdata(tmp_path / "j1" / name, header=True)
        b, hb = fits.getdata(tmp_path / "j2" / name, header=True)
        np.testing.assert_array_equal(a, b)
        assert ha["BGO_RUN"] == hb["BGO_RUN"]


def test_workers_report_a_bad_file_and_finish_the_rest(tmp_path, capsys):
    files = _inputs(tmp_path / "in", 2)
    bad = tmp_path / "in" / "bad.fits"
    bad.write_bytes(b"SIMPLE  =                    T" + b" " * 50)
    assert main([*files, str(bad), "-o", str(tmp_path / "out"), "-j", "2", *FAST]) == 2
    err = capsys.readouterr().err
    assert "bad.fits" in err and err.count("bgopt: error:") == 1
    assert len(list((tmp_path / "out").glob("*_bgSubtracted.fits"))) == 2
    assert not list((tmp_path / "out").glob("*.part"))


def test_jobs_must_be_positive(tmp_path, capsys):
    files = _inputs(tmp_path / "in", 1)
    assert main([*files, "-o", str(tmp_path), "-j", "0", *FAST]) == 2
    assert "--jobs: must be an integer >= 1, got 0" in capsys.readouterr().err
