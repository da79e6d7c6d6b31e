"""setup.py states what the package needs, and requirements*.txt agree with it.

Every third-party module imported anywhere under ``duda_d2/``, ``tools/`` and ``datasets/``
(found with ``ast``, lazy imports inside functions included) must be covered by
``install_requires``; an import guarded by ``except ImportError`` (optional) by one of the
``extras_require`` groups. The torch floor must be the newest that the torch APIs the code
calls need, so ``pip install -e .`` in a user's own environment gives a working package.
"""
import ast
import functools
import importlib.metadata
import os
import re
import sys
from typing import Dict, Iterator, List, Set, Tuple

import importlib.util

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCANNED = ("duda_d2", "tools", "datasets")

# Import names whose distribution is named otherwise.
IMPORT_TO_DISTRIBUTION = {"cv2": "opencv-python-headless", "PIL": "pillow", "yaml": "pyyaml",
                          "cityscapesscripts": "cityscapesscripts", "sklearn": "scikit-learn"}
# Imported, deliberately not in setup.py.
NOT_REQUIRED = {
    "detectron2": "not on PyPI under its own name: tools/install_detectron2.py installs it "
                  "(README, Detectron2 installation)",
    "panopticapi": "the official one is not on PyPI; PyPI's panopticapi-lite pins numpy<2, so "
                   "tools/install_detectron2.py installs it without dependencies",
}
# The wheel tools/install_detectron2.py installs (without dependencies) for each of them.
NOT_REQUIRED_INSTALLED_AS = {"detectron2": "sal-detectron2", "panopticapi": "panopticapi-lite"}
# Detectron2's own requirements that the project does not need (both serve LazyConfig only),
# and packages Detectron2 imports that its snapshot's metadata does not list.
DETECTRON2_REQUIREMENTS_NOT_NEEDED = {"hydra-core", "black"}
DETECTRON2_IMPORTS_UNLISTED = {"iopath", "fvcore"}

# Torch APIs the code calls -> the first torch release that has them.
TORCH_API_FLOORS = {
    r"torch\.amp\.GradScaler\(": "2.3",  # torch.cuda.amp.GradScaler before
    r"scaled_dot_product_attention\(": "2.0",
    r"torch\.inference_mode": "1.9",
    r"weights_only=": "1.13",
    r"torch\.isin\(": "1.10",
    r"\.register_load_state_dict_pre_hook\(": "2.5",  # public name; the private one is older
}
# The torchvision release built against each torch release.
TORCHVISION_FOR_TORCH = {"2.0": "0.15", "2.1": "0.16", "2.2": "0.17", "2.3": "0.18",
                         "2.4": "0.19", "2.5": "0.20", "2.6": "0.21", "2.7": "0.22"}


def _setup_lists() -> Tuple[List[str], Dict[str, List[str]]]:
    """``INSTALL_REQUIRES`` and ``EXTRAS_REQUIRE`` of setup.py, read without running it."""
    with open(os.path.join(REPO, "setup.py")) as f:
        tree = ast.parse(f.read())
    values = {target.id: ast.literal_eval(node.value) for node in tree.body
              if isinstance(node, ast.Assign) for target in node.targets
              if isinstance(target, ast.Name)}
    return values["INSTALL_REQUIRES"], values["EXTRAS_REQUIRE"]


def _names(requirements: List[str]) -> Dict[str, Requirement]:
    parsed = [Requirement(line) for line in requirements]
    return {canonicalize_name(r.name): r for r in parsed}


def _requirements_file(name: str) -> Dict[str, Requirement]:
    with open(os.path.join(REPO, name)) as f:
        lines = [line.split("#")[0].strip() for line in f]
    return _names([line for line in lines if line and not line.startswith("-")])


def _guarded(node: ast.Try) -> bool:
    """Whether ``node`` catches ImportError (or ModuleNotFoundError): an optional import."""
    for handler in node.handlers:
        types = handler.type.elts if isinstance(handler.type, ast.Tuple) else [handler.type]
        if any(isinstance(t, ast.Name) and t.id in ("ImportError", "ModuleNotFoundError")
               for t in types):
            return True
    return False


def _imports(tree: ast.AST, optional: bool = False) -> Iterator[Tuple[str, bool]]:
    """(top-level module, optional) of every absolute import in ``tree``."""
    if isinstance(tree, ast.Import):
        for alias in tree.names:
            yield alias.name.split(".")[0], optional
    elif isinstance(tree, ast.ImportFrom) and tree.level == 0 and tree.module:
        yield tree.module.split(".")[0], optional
    for child in ast.iter_child_nodes(tree):
        guarded = optional or (isinstance(tree, ast.Try) and _guarded(tree)
                               and child in tree.body)
        yield from _imports(child, guarded)


@functools.lru_cache(maxsize=None)
def _packages_distributions() -> Dict[str, List[str]]:
    return importlib.metadata.packages_distributions()


@functools.lru_cache(maxsize=None)
def _sources() -> Dict[str, str]:
    """{path relative to the repository: text} of the Python files of the scanned folders."""
    sources = {}
    for folder in SCANNED:
        for dirpath, _, names in os.walk(os.path.join(REPO, folder)):
            for name in sorted(n for n in names if n.endswith(".py")):
                path = os.path.join(dirpath, name)
                with open(path) as f:
                    sources[os.path.relpath(path, REPO)] = f.read()
    return sources


@functools.lru_cache(maxsize=None)
def _third_party_imports() -> Dict[str, Dict[str, Set[str]]]:
    """{"required"|"optional": {top-level module: files importing it}} of the scanned folders."""
    found: Dict[str, Dict[str, Set[str]]] = {"required": {}, "optional": {}}
    for path, text in _sources().items():
        folder = os.path.join(REPO, os.path.dirname(path))
        local = {n[:-3] for n in os.listdir(folder) if n.endswith(".py")}  # sibling modules
        for module, optional in _imports(ast.parse(text, path)):
            if module in sys.stdlib_module_names or module in local \
                    or module in ("duda_d2", "__future__"):
                continue
            kind = "optional" if optional else "required"
            found[kind].setdefault(module, set()).add(path)
    for module in found["required"]:
        found["optional"].pop(module, None)
    return found


def _distribution(module: str) -> str:
    if module in IMPORT_TO_DISTRIBUTION:
        return IMPORT_TO_DISTRIBUTION[module]
    installed = _packages_distributions().get(module)
    return canonicalize_name(installed[0] if installed else module)


def _floor(requirement: Requirement) -> Version:
    floors = [Version(s.version) for s in requirement.specifier if s.operator in (">=", "==")]
    assert floors, f"{requirement} has no floor"
    return max(floors)


def test_the_import_scan_sees_lazy_and_optional_imports():
    tree = ast.parse("import a.b\nfrom c import d\ndef f():\n    import e\n"
                     "try:\n    import g\nexcept (ImportError, OSError):\n    import h\n"
                     "try:\n    import i\nexcept ValueError:\n    pass\nfrom . import j\n")
    assert list(_imports(tree)) == [("a", False), ("c", False), ("e", False), ("g", True),
                                    ("h", False), ("i", False)]


def test_every_imported_package_is_in_install_requires_or_an_extra():
    install_requires, extras = _setup_lists()
    required = set(_names(install_requires))
    in_extras = {name for group in extras.values() for name in _names(group)}
    found = _third_party_imports()
    assert "torch" in found["required"] and "detectron2" in found["required"]  # scan works
    missing = {module: sorted(files) for module, files in found["required"].items()
               if module not in NOT_REQUIRED and _distribution(module) not in required}
    assert not missing, f"imported but not in setup.py's INSTALL_REQUIRES: {missing}"
    missing = {module: sorted(files) for module, files in found["optional"].items()
               if _distribution(module) not in required | in_extras}
    assert not missing, f"optional imports in no EXTRAS_REQUIRE group: {missing}"


def test_no_unused_requirements():
    """Every package of INSTALL_REQUIRES is imported by the scanned code or needed by
    Detectron2."""
    install_requires, _ = _setup_lists()
    found = _third_party_imports()
    imported = {_distribution(m) for kind in found.values() for m in kind}
    unused = set(_names(install_requires)) - imported - _detectron2_requirements()
    assert not unused, f"INSTALL_REQUIRES lists packages nothing imports: {sorted(unused)}"


def _detectron2_requirements() -> Set[str]:
    """The packages Detectron2 needs: its installed distribution's requirements (no extras)
    and ``DETECTRON2_IMPORTS_UNLISTED``."""
    distribution = _packages_distributions().get("detectron2", [None])[0]
    if distribution is None:
        pytest.skip("Detectron2 is not installed")
    requires = importlib.metadata.requires(distribution) or []
    names = set(DETECTRON2_IMPORTS_UNLISTED)
    for line in requires:
        requirement = Requirement(line)
        if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
            names.add(canonicalize_name(requirement.name))
    return names


def test_detectron2s_own_requirements_are_listed():
    """The Detectron2 snapshot tools/install_detectron2.py installs comes without its
    dependencies (pip --no-deps), so setup.py lists those the project needs."""
    install_requires, _ = _setup_lists()
    needed = _detectron2_requirements() - DETECTRON2_REQUIREMENTS_NOT_NEEDED
    missing = needed - set(_names(install_requires))
    assert not missing, f"Detectron2 needs these, setup.py does not list them: {missing}"


def test_requirements_txt_agrees_with_setup_py():
    install_requires, extras = _setup_lists()
    setup_requirements = _names(install_requires)
    pinned = _requirements_file("requirements.txt")
    assert set(pinned) == set(setup_requirements), (
        "requirements.txt and setup.py's INSTALL_REQUIRES name different packages: "
        f"{sorted(set(pinned) ^ set(setup_requirements))}")
    for name, requirement in pinned.items():
        for spec in requirement.specifier:
            if spec.operator == "==":  # a pin must be allowed by setup.py
                assert setup_requirements[name].specifier.contains(spec.version), (
                    name, str(spec), str(setup_requirements[name]))
    assert pinned["torch"].specifier and pinned["torchvision"].specifier  # tested releases
    dev = _requirements_file("requirements-dev.txt")
    assert set(dev) == set(_names(extras["dev"]))


def test_torch_floor_is_what_the_code_needs():
    install_requires, _ = _setup_lists()
    requirements = _names(install_requires)
    code = "\n".join(_sources().values())
    used = {pattern: floor for pattern, floor in TORCH_API_FLOORS.items()
            if re.search(pattern, code)}
    assert r"torch\.amp\.GradScaler\(" in used  # the scan works
    needed = max(Version(v) for v in used.values())
    assert _floor(requirements["torch"]) == needed, (str(requirements["torch"]), used)
    torchvision = Version(TORCHVISION_FOR_TORCH[f"{needed.major}.{needed.minor}"])
    assert _floor(requirements["torchvision"]) == torchvision


def _installer():
    """tools/install_detectron2.py as a module (its main() is not run)."""
    spec = importlib.util.spec_from_file_location(
        "install_detectron2", os.path.join(REPO, "tools", "install_detectron2.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_no_deps_wheels_are_hash_pinned_and_never_resolved_by_pip():
    """The wheels installed without dependencies (their metadata pins numpy<2) are pinned with
    a sha256 and appear in no requirements file nor setup.py: pip never resolves their
    dependencies, so it never downgrades numpy for them."""
    installer = _installer()
    no_deps = {canonicalize_name(n) for n in installer.NO_DEPS_DISTRIBUTIONS}
    assert set(NOT_REQUIRED) == set(NOT_REQUIRED_INSTALLED_AS)
    assert {canonicalize_name(d) for d in NOT_REQUIRED_INSTALLED_AS.values()} <= no_deps
    for requirement, sha in ((installer.SNAPSHOT_REQUIREMENT, installer.SNAPSHOT_SHA256),
                             (installer.PANOPTICAPI_REQUIREMENT, installer.PANOPTICAPI_SHA256)):
        parsed = Requirement(requirement)
        assert canonicalize_name(parsed.name) in no_deps
        assert [s.operator for s in parsed.specifier] == ["=="], requirement
        assert re.fullmatch(r"[0-9a-f]{64}", sha), requirement
    install_requires, extras = _setup_lists()
    listed = set(_names(install_requires)) | {n for g in extras.values() for n in _names(g)}
    listed |= set(_requirements_file("requirements.txt"))
    listed |= set(_requirements_file("requirements-dev.txt"))
    assert not listed & no_deps, f"installed with --no-deps, must not be listed: {listed & no_deps}"


def test_only_the_no_deps_wheels_conflict_with_the_installed_numpy():
    """pip check, for numpy: every installed distribution accepts the installed numpy, except
    those the installer puts in without dependencies; and requirements.txt keeps numpy 2 (a
    numpy<2 requirement added there fails to resolve instead of downgrading numpy)."""
    numpy_version = importlib.metadata.version("numpy")
    conflicting = set()
    for dist in importlib.metadata.distributions():
        if not dist.metadata["Name"]:  # a broken leftover of an interrupted install
            continue
        for line in dist.requires or []:
            requirement = Requirement(line)
            if canonicalize_name(requirement.name) != "numpy":
                continue
            if requirement.marker is not None and \
                    not requirement.marker.evaluate({"extra": ""}):
                continue
            if not requirement.specifier.contains(numpy_version, prereleases=True):
                conflicting.add(canonicalize_name(dist.metadata["Name"]))
    no_deps = {canonicalize_name(n) for n in _installer().NO_DEPS_DISTRIBUTIONS}
    assert conflicting <= no_deps, (
        f"these installed packages reject numpy {numpy_version}: {sorted(conflicting - no_deps)}")
    numpy_spec = _requirements_file("requirements.txt")["numpy"].specifier
    assert numpy_spec.contains(numpy_version) and not numpy_spec.contains("1.26.4")


def test_panopticapi_installer_uses_no_deps_a_hash_and_guards_numpy(monkeypatch, capsys):
    installer = _installer()
    calls = []
    found = iter(["", "panopticapi-lite 0.2.0"])
    numpy = iter(["2.4.6", "1.26.4"])  # as if pip had downgraded numpy
    monkeypatch.setattr(installer, "panopticapi_distribution", lambda: next(found))
    monkeypatch.setattr(installer, "numpy_version", lambda: next(numpy))

    def check_call(cmd):
        with open(cmd[cmd.index("-r") + 1]) as f:
            calls.append((cmd, f.read()))
    monkeypatch.setattr(installer.subprocess, "check_call", check_call)
    assert installer.install_panopticapi() == 1
    assert "changed numpy from 2.4.6 to 1.26.4" in capsys.readouterr().err
    (cmd, requirements), = calls
    assert "--no-deps" in cmd and "--require-hashes" in cmd
    assert requirements.strip() == (f"{installer.PANOPTICAPI_REQUIREMENT} "
                                    f"--hash=sha256:{installer.PANOPTICAPI_SHA256}")
    # Idempotent: the pinned release already there -> nothing installed; another
    # distribution providing panopticapi (the official one) is kept.
    for present in ("panopticapi-lite 0.2.0", "panopticapi 0.1"):
        monkeypatch.setattr(installer, "panopticapi_distribution", lambda p=present: p)
        assert installer.install_panopticapi() == 0
    assert len(calls) == 1
