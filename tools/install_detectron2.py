#!/usr/bin/env python
"""Install Detectron2 into the running interpreter's environment, the way design.md prescribes.

Order of preference:
1. an already importable ``detectron2`` (a user who built it keeps it);
2. the PyPI wheel ``sal-detectron2==0.7.2`` -- the official main branch at commit a59f0563 with
   three trivial edits. Its tag says CPython 3.10 only but its Python code runs on 3.11, so it is
   installed without dependencies into ``<site-packages>/_detectron2_snapshot`` (hash-checked)
   and put on ``sys.path`` by a ``.pth`` file. Its compiled ``_C`` does not load; semantic
   segmentation does not need it.
3. ``--from-source``: the official repository at a pinned commit, built with the local compiler
   (and CUDA toolkit, on GPU machines). Used by ``make detectron2-from-source``.

Then ``panopticapi``, which Detectron2's ``projects/panoptic_deeplab`` (and its panoptic
evaluator and visualizer) import: an already importable one is kept, otherwise the PyPI wheel
``panopticapi-lite==0.2.0`` is installed, hash-checked and WITHOUT dependencies (see
``PANOPTICAPI_REQUIREMENT`` for why, and how it compares with the official code). Both
packages' metadata pin ``numpy<2``: they are never installed with their dependencies, never
listed in requirements.txt or setup.py, and the installer fails if numpy's version changed.

Run it with the venv's python: ``.venv/bin/python tools/install_detectron2.py``.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile

SNAPSHOT_REQUIREMENT = "sal-detectron2==0.7.2"
SNAPSHOT_SHA256 = "491af0c7f79bdb2d178e46f6cb16a97c4ac968d45c41ea3f6b6435d59bbee561"
SNAPSHOT_DIRNAME = "_detectron2_snapshot"
# panopticapi: the official cocodataset/panopticapi is not on PyPI. PyPI's panopticapi-lite 0.2.0
# ships its package, compared with the official master (commit 7bb4655, 2021-06-17) by AST:
# utils.py (rgb2id, id2rgb, IdGenerator, get_traceback, save_json), evaluation.py (pq_compute
# and its PQStat) and combine_semantic_and_instance_predictions.py are the same code; the only
# differences are CRLF line endings, tab indentation in utils.py, docstring quotes,
# ``class X():`` -> ``class X:``, a dropped shebang and dropped unused imports (``sys``,
# ``datetime.timedelta``). The official repo's converters/, cityscapes_gt_converter/ and
# visualization.py are outside the package there too. Its metadata, however, requires
# numpy<2, scikit-image, matplotlib>=3.7.5, pillow>=10.4, pycocotools>=2.0.7 (the official
# setup.py asks for numpy and Pillow only): installed with its dependencies it would downgrade
# numpy 2, which opencv needs, and pull scikit-image that nothing uses. Hence --no-deps.
PANOPTICAPI_REQUIREMENT = "panopticapi-lite==0.2.0"
PANOPTICAPI_SHA256 = "58d3ffa842a72240162e7fa744c602a0a5320baabbdb3295d770374f4639b486"
# The wheels installed without their dependencies (their metadata pins numpy<2): none of them
# may be listed in requirements*.txt or setup.py (tests/test_packaging.py checks it).
NO_DEPS_DISTRIBUTIONS = ("sal-detectron2", "panopticapi-lite")

SOURCE_URL = (
    "git+https://github.com/facebookresearch/detectron2.git"
    "@02b5c4e295e990042a714712c21dc79b731e8833"
)


def detectron2_location() -> str:
    """Folder ``import detectron2`` resolves to in a fresh interpreter ('' when it fails).

    A fresh process is needed because a ``.pth`` file written by this one is read at start-up.
    """
    probe = "import detectron2, os; print(os.path.dirname(detectron2.__file__))"
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    return result.stdout.strip() if result.returncode == 0 else ""


def site_packages() -> str:
    return sysconfig.get_paths()["purelib"]


def install_snapshot() -> None:
    """Install the hash-checked PyPI snapshot into a folder of the venv plus a ``.pth`` file."""
    target = os.path.join(site_packages(), SNAPSHOT_DIRNAME)
    with tempfile.TemporaryDirectory() as tmp:
        req = os.path.join(tmp, "requirements.txt")
        with open(req, "w") as f:
            f.write(f"{SNAPSHOT_REQUIREMENT} --hash=sha256:{SNAPSHOT_SHA256}\n")
        staging = os.path.join(tmp, "target")
        cmd = [
            sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
            "--no-deps", "--only-binary=:all:", "--python-version", "3.10",
            "--require-hashes", "--target", staging, "-r", req,
        ]
        subprocess.check_call(cmd)
        # The wheel also ships a top-level ``tools`` package that would shadow this project's
        # ``tools/`` folder on sys.path; only ``detectron2`` and its metadata are kept.
        for name in os.listdir(staging):
            if name != "detectron2" and not name.endswith(".dist-info"):
                shutil.rmtree(os.path.join(staging, name))
        # Install atomically: a half-copied snapshot must never look importable.
        if os.path.exists(target):
            shutil.rmtree(target)
        shutil.move(staging, target)
    with open(os.path.join(site_packages(), f"{SNAPSHOT_DIRNAME}.pth"), "w") as f:
        f.write(SNAPSHOT_DIRNAME + "\n")


def numpy_version() -> str:
    """numpy's installed version ('' when it is not installed), read in a fresh interpreter."""
    probe = "import importlib.metadata as m; print(m.version('numpy'))"
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    return result.stdout.strip() if result.returncode == 0 else ""


def panopticapi_distribution() -> str:
    """The distribution an importable ``panopticapi`` comes from, e.g. ``panopticapi-lite
    0.2.0`` ('' when ``import panopticapi`` fails; '?' when it has no metadata)."""
    probe = ("import importlib.metadata as m, panopticapi\n"
             "d = m.packages_distributions().get('panopticapi', ['?'])[0]\n"
             "print(d if d == '?' else f'{d} {m.version(d)}')")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    return result.stdout.strip() if result.returncode == 0 else ""


def install_panopticapi() -> int:
    """Keep an importable ``panopticapi`` of another distribution (the official one built from
    git); else install the pinned panopticapi-lite, hash-checked and without dependencies.
    Returns the exit status (1 if numpy's version changed or the import still fails)."""
    found = panopticapi_distribution()
    pinned = PANOPTICAPI_REQUIREMENT.replace("==", " ")
    if found == pinned:
        return 0
    if found and not found.startswith(pinned.split()[0] + " "):
        print(f"panopticapi already importable (from {found}); keeping it")
        return 0
    print(f"installing {PANOPTICAPI_REQUIREMENT} (hash-checked, without dependencies)")
    numpy_before = numpy_version()
    with tempfile.TemporaryDirectory() as tmp:
        req = os.path.join(tmp, "requirements.txt")
        with open(req, "w") as f:
            f.write(f"{PANOPTICAPI_REQUIREMENT} --hash=sha256:{PANOPTICAPI_SHA256}\n")
        subprocess.check_call([
            sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
            "--no-deps", "--only-binary=:all:", "--require-hashes", "-r", req,
        ])
    numpy_after = numpy_version()
    if numpy_after != numpy_before:
        print(f"error: installing {PANOPTICAPI_REQUIREMENT} changed numpy from {numpy_before} "
              f"to {numpy_after}; reinstall numpy (pip install -r requirements.txt)",
              file=sys.stderr)
        return 1
    if not panopticapi_distribution():
        print("error: panopticapi still not importable after installing "
              f"{PANOPTICAPI_REQUIREMENT}", file=sys.stderr)
        return 1
    return 0


def install_from_source() -> None:
    """Build the official source at the pinned commit (needs a compiler; CUDA on GPU machines)."""
    subprocess.check_call(
        [sys.executable, "-m", "pip", "install", "--no-build-isolation", SOURCE_URL]
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--from-source", action="store_true",
                        help="build the official source at the pinned commit (compiled ops)")
    args = parser.parse_args()
    if args.from_source:
        snapshot = os.path.join(site_packages(), SNAPSHOT_DIRNAME)
        if os.path.exists(snapshot):
            shutil.rmtree(snapshot)
            os.remove(os.path.join(site_packages(), f"{SNAPSHOT_DIRNAME}.pth"))
        install_from_source()
        return install_panopticapi()
    location = detectron2_location()
    if location:
        print(f"detectron2 already importable from {location}; keeping it")
        return install_panopticapi()
    print(f"installing {SNAPSHOT_REQUIREMENT} (hash-checked) into {site_packages()}")
    install_snapshot()
    if not detectron2_location():
        print("error: detectron2 still not importable after installing the snapshot",
              file=sys.stderr)
        return 1
    return install_panopticapi()


if __name__ == "__main__":
    sys.exit(main())
