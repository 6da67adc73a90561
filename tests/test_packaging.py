"""A non-editable install (a wheel) carries the built-in search spaces (slow: builds the wheel)."""
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_wheel_ships_the_builtin_spaces_and_loads_them(tmp_path):
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "--no-build-isolation",
                            "-w", str(tmp_path / "wheel"), "-q"], capture_output=True, text=True, timeout=600)
    assert built.returncode == 0, built.stderr[-3000:]
    wheel = next((tmp_path / "wheel").glob("frugalnas-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    shipped = {p.name for p in (ROOT / "search_spaces").glob("*.yaml")}
    assert shipped and {f"frugalnas/spaces/builtin/{n}" for n in shipped} <= names
    zipfile.ZipFile(wheel).extractall(tmp_path / "site")
    check = subprocess.run([sys.executable, "-c", "import frugalnas.spaces.loader as l; "
                            "assert l.__file__.startswith(%r), l.__file__; "
                            "print(sorted(l.builtin_spaces())); l.load_space('nb201')" % str(tmp_path / "site")],
                           capture_output=True, text=True, cwd=tmp_path, env={"PYTHONPATH": str(tmp_path / "site"),
                                                                              "PATH": "/usr/bin:/bin"})
    assert check.returncode == 0, check.stderr[-3000:]
    assert check.stdout.strip() == str(sorted(p.removesuffix(".yaml") for p in shipped))
