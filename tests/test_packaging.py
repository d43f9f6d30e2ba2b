"""The wheel carries every module, the config groups and the assets (users install it without the repo)."""

import subprocess
import sys
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_wheel_ships_all_modules_configs_and_assets(tmp_path):
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            str(REPO),
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
        ],
        check=True,
        capture_output=True,
        cwd=tmp_path,
    )
    (wheel,) = tmp_path.glob("vlmrl-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    modules = {str(p.relative_to(REPO)) for p in (REPO / "vlmrl").rglob("*.py") if "__pycache__" not in p.parts}
    assert modules - names == set()
    for group in ("envs", "agents", "labelers", "experiments"):
        yamls = {f"vlmrl/conf/{group}/{p.name}" for p in (REPO / group).glob("*.yaml")}
        assert yamls and yamls <= names, f"{group}/ missing from the wheel"
    assert "vlmrl/assets/clip/vlmrl-tiny.json" in names
