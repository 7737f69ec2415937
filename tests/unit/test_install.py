"""One installed namespace: the wheel holds `distill` and nothing else at the top level (no `actors`,
`cluster` or `pipelines` to clash with other projects), and it imports from the wheel alone; a source tree
(a checkout, a Ray job's working_dir) resolves the same names to the folders beside distill/."""

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_wheel_installs_one_top_level_name_and_imports_from_itself(tmp_path):
    # built from a copy: setuptools leaves build/ and *.egg-info in the tree it builds
    src = tmp_path / "src"
    skip = shutil.ignore_patterns(".git", ".venv", "runs", "build", "*.egg-info", "__pycache__", "tests")
    shutil.copytree(ROOT, src, ignore=skip)
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            str(src),
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
        ],
        check=True,
        capture_output=True,
    )
    (whl,) = tmp_path.glob("distill-*.whl")
    with zipfile.ZipFile(whl) as z:
        names = z.namelist()
        z.extractall(tmp_path / "site")
    assert {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")} == {"distill"}
    assert "distill/pipelines/recipes/quickstart.yaml" in names and "distill/cluster/ray-cluster.yaml" in names
    # every module of the tree is in it (pyproject lists packages by hand: a new subpackage must be added)
    tree = {
        "/".join(("distill", folder, *f.relative_to(ROOT / folder).parts)).replace("distill/distill/", "distill/")
        for folder in ("distill", "actors", "cluster", "pipelines")
        for f in (ROOT / folder).rglob("*.py")
    }
    assert len(tree) > 60 and "distill/actors/student.py" in tree and "distill/data/store.py" in tree
    assert tree - set(names) == set()
    probe = (
        "import sys; sys.path.insert(0, sys.argv[1])\n"
        "import distill.actors.student, distill.pipelines.run, distill.cluster.session\n"
        "from distill.config import load_config\n"
        "assert load_config('quickstart').name == 'quickstart'\n"
        "print(distill.actors.student.__file__, distill.pipelines.run.__file__)\n"
        "try:\n    import actors\nexcept ImportError:\n    print('no top-level actors')\n"
    )
    r = subprocess.run(
        [sys.executable, "-c", probe, str(tmp_path / "site")], cwd=tmp_path, capture_output=True, text=True
    )
    assert r.returncode == 0, r.stderr[-2000:]
    files, actors = r.stdout.split("\n")[:2]
    assert all(f.startswith(str(tmp_path / "site" / "distill")) for f in files.split()), files
    assert actors == "no top-level actors"


def test_a_source_tree_resolves_the_folders_beside_distill(tmp_path):
    import distill.actors.student
    import distill.pipelines.run

    assert Path(distill.actors.student.__file__) == ROOT / "actors" / "student.py"
    assert Path(distill.pipelines.run.__file__) == ROOT / "pipelines" / "run.py"
    # and only those three: the root's other folders are not parts of the package
    r = subprocess.run([sys.executable, "-c", "import distill.tests"], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode != 0 and "No module named 'distill.tests'" in r.stderr
