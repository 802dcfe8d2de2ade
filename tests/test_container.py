"""The image builds, proved without a container runtime (issue 22, item 1).

The build context is a clean checkout (the files git tracks) less what `.dockerignore` excludes;
the build stage's COPY and RUN steps run in a temporary directory as the Dockerfile writes them
(``/src`` and ``/wheels`` moved under it, ``pip`` being this Python's); the runtime stage's
``pip install`` then runs offline from those wheels in a fresh venv, and that venv must hold every
extra the configurations the image is run with need (``postgresql://`` needs psycopg). The apt and
user-creation steps are the base image's business and are not run here.
"""
from __future__ import annotations

import fnmatch
import os
import re
import shutil
import subprocess
import sys
import venv
from pathlib import Path

import pytest
import yaml

from tests.test_deploy import instructions

ROOT = Path(__file__).resolve().parent.parent


def dockerignore_patterns() -> list[str]:
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]


def ignored(path: str, patterns: list[str]) -> bool:
    """Whether Docker leaves ``path`` (relative, '/'-separated) out of the context: it, or a folder
    above it, matches a pattern (``**`` any number of folders; no ``!`` exceptions are used here)."""
    assert not any(p.startswith("!") for p in patterns), "exceptions are not modelled by this test"
    parts = path.split("/")
    prefixes = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
    for pattern in patterns:
        pattern = pattern.strip("/")
        for prefix in prefixes:
            if fnmatch.fnmatchcase(prefix, pattern):
                return True
            if pattern.startswith("**/") and any(fnmatch.fnmatchcase(part, pattern[3:]) for part in prefix.split("/")):
                return True
    return False


def context(dest: Path) -> Path:
    """The build context: git's files less `.dockerignore`'s, copied to ``dest``."""
    files = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout.decode().split("\0")
    patterns = dockerignore_patterns()
    for name in filter(None, files):
        if ignored(name, patterns) or not (ROOT / name).is_file():
            continue
        target = dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, target)
    return dest


def stages() -> list[list[tuple[str, str]]]:
    steps = instructions(ROOT / "Dockerfile")
    starts = [i for i, (op, _) in enumerate(steps) if op == "FROM"]
    return [steps[a:b] for a, b in zip(starts, starts[1:] + [len(steps)])]


def compose_build_args() -> dict[str, str]:
    compose = yaml.safe_load((ROOT / "compose.yaml").read_text())
    for service in compose["services"].values():
        build = service.get("build")
        if isinstance(build, dict):
            return {k: str(v) for k, v in (build.get("args") or {}).items()}
    return {}


def test_dockerignore_keeps_every_path_the_build_copies():
    patterns = dockerignore_patterns()
    for op, arg in instructions(ROOT / "Dockerfile"):
        if op == "COPY" and not arg.startswith("--from"):
            for src in arg.split()[:-1]:
                assert not ignored(src, patterns), f"{src} is copied by the Dockerfile but excluded by .dockerignore"


def _run(step: str, *, cwd: Path, moved: dict[str, Path], pip: list[str], env: dict[str, str]) -> None:
    for where, here in moved.items():
        step = re.sub(rf"(?<![\w/]){re.escape(where)}(?=[/\s\"']|$)", str(here), step)
    step = re.sub(r"(?<![\w/.-])pip (?=wheel|install)", " ".join(pip) + " ", step)
    done = subprocess.run(["sh", "-ec", step], cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, f"step failed: {step}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"


@pytest.mark.slow
def test_the_image_builds_and_installs_every_extra_its_configuration_needs(tmp_path):
    build, runtime = stages()[0], stages()[-1]
    ctx = context(tmp_path / "context")
    args = {op_arg.split("=", 1)[0]: op_arg.split("=", 1)[1].strip('"') if "=" in op_arg else ""
            for op, op_arg in build if op == "ARG"}
    args.update(compose_build_args())
    assert "postgresql" in args.get("EXTRAS", "").split(","), "compose builds the PostgreSQL driver in"
    env = {**os.environ, **args}
    wheels = tmp_path / "wheels"
    src = tmp_path / "src"
    workdir = src
    moved = {"/wheels": wheels, "/src": src}
    for op, arg in build[1:]:
        if op == "WORKDIR":
            workdir = moved.get(arg, tmp_path / arg.lstrip("/"))
            workdir.mkdir(parents=True, exist_ok=True)
        elif op == "COPY":
            *sources, dest = arg.split()
            for s in sources:
                origin = ctx / s
                assert origin.exists(), f"COPY {s}: not in the build context (clean checkout less .dockerignore)"
                target = workdir / dest if dest not in ("./", ".") else workdir
                if origin.is_dir():
                    shutil.copytree(origin, workdir / dest)
                else:
                    target.mkdir(parents=True, exist_ok=True) if dest.endswith("/") else None
                    shutil.copy2(origin, target / s if dest.endswith("/") or dest == "." else target)
        elif op == "RUN" and "apt-get" not in arg:
            _run(arg, cwd=workdir, moved=moved, pip=[sys.executable, "-m", "pip"], env=env)
    assert any(wheels.glob("pressor-*.whl")), "the build stage made pressor's wheel"

    # The runtime stage: its pip install, offline from those wheels, in a fresh venv.
    target = tmp_path / "runtime"
    venv.create(target, with_pip=True)
    py = target / "bin" / "python"
    for op, arg in runtime[1:]:
        if op == "RUN" and "pip install" in arg:
            _run(arg, cwd=tmp_path, moved=moved, pip=[str(py), "-m", "pip"], env=env)
    config = yaml.safe_load((ROOT / "docs" / "deploy" / "serve.yaml").read_text())
    assert str(config["audit_db"]).startswith("postgresql://")
    check = subprocess.run([str(py), "-c", "import psycopg, pressor.service.app, pressor.examples; print(psycopg.__version__)"],
                           capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert check.returncode == 0, check.stderr
    entry = next(a for o, a in runtime if o == "ENTRYPOINT")
    assert entry.startswith('["pressor"') and (target / "bin" / "pressor").exists()
    help_ = subprocess.run([str(target / "bin" / "pressor"), "serve", "--help"], capture_output=True, text=True, timeout=120)
    assert help_.returncode == 0, help_.stderr


def test_the_lock_file_pins_every_requirement_the_image_installs():
    from importlib.metadata import requires

    from packaging.requirements import Requirement

    pinned = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            name, _, version = line.partition("==")
            assert version, f"constraints.txt: {line!r} is not pinned with =="
            pinned[re.sub(r"[-_.]+", "-", name).lower()] = version
    wanted = {"", *compose_build_args().get("EXTRAS", "").split(","), "test"}
    for spec in requires("pressor") or []:
        req = Requirement(spec)
        extra = next((e for e in wanted if e and req.marker and req.marker.evaluate({"extra": e})), None)
        if req.marker and extra is None:
            continue
        name = re.sub(r"[-_.]+", "-", req.name).lower()
        assert name in pinned, f"{req.name} is not in constraints.txt"
        assert req.specifier.contains(pinned[name], prereleases=True), f"{req.name}=={pinned[name]} does not satisfy {req}"
    ci = (ROOT / ".ci" / "run").read_text()
    assert "-c constraints.txt" in ci
    assert "-c constraints.txt" in (ROOT / "Dockerfile").read_text()
