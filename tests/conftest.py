"""Fixtures shared by the template's tests: each flavour is built once per session.

`service_build` runs a test once per flavour; the contract suite in tests/contract/ uses it
with `spawn`, which boots the built service as an operator would and always kills it after.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from helpers import TEMPLATE, require_tool
from services import BuiltService, Service, build_service

# The answers the contract suite builds with: a name and port unlike the defaults, so that a
# name or port written into the code instead of derived from the answers shows up as a failure.
CONTRACT_ANSWERS = {"project_name": "tally-keeper", "http_port": 18123}

# A flavour can be run once its template's build manifest exists.
FLAVOUR_MANIFESTS = {
    "python": TEMPLATE / "template" / "{% if is_python %}pyproject.toml{% endif %}.jinja",
    "rust": TEMPLATE / "template" / "{% if is_rust %}Cargo.toml{% endif %}.jinja",
}
FLAVOUR_TOOLS = {"python": "uv", "rust": "cargo"}


def _external() -> tuple[BuiltService | None, object | None]:
    """A service built elsewhere (`plumbline check-service`, tests/external.py), or None twice."""
    import external

    built = external.external_build()
    return built, external.remote_service(built)


EXTERNAL, REMOTE = _external()


def _build(flavour: str, tmp_path_factory: pytest.TempPathFactory) -> BuiltService:
    manifest = FLAVOUR_MANIFESTS[flavour]
    assert manifest.exists(), f"the {flavour} flavour's build manifest {manifest} is missing"
    require_tool(FLAVOUR_TOOLS[flavour])
    return build_service(flavour, tmp_path_factory.mktemp(f"{flavour}-build"), **CONTRACT_ANSWERS)


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    """`@pytest.mark.needs_tool("cargo")`: fail before any fixture runs, naming the missing tool."""
    for mark in item.iter_markers("needs_tool"):
        for name in mark.args:
            require_tool(name)


@pytest.fixture(scope="session")
def python_service(tmp_path_factory: pytest.TempPathFactory) -> BuiltService:
    """The Python flavour, rendered and built (`uv sync --locked`) once per session."""
    return _build("python", tmp_path_factory)


@pytest.fixture(scope="session")
def rust_service(tmp_path_factory: pytest.TempPathFactory) -> BuiltService:
    """The Rust flavour, rendered and built (`cargo build --locked`) once per session."""
    return _build("rust", tmp_path_factory)


@pytest.fixture(
    scope="session",
    params=[pytest.param("external", marks=pytest.mark.slow)] if EXTERNAL else [
        pytest.param("python", marks=pytest.mark.slow),
        pytest.param("rust", marks=[pytest.mark.slow, pytest.mark.rust]),
    ],
)
def service_build(request: pytest.FixtureRequest) -> BuiltService:
    """Each flavour in turn, built once per session (or the external service)."""
    if EXTERNAL is not None:
        return EXTERNAL
    return request.getfixturevalue(f"{request.param}_service")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if EXTERNAL is not None:
        import external

        external.deselect(config, items, EXTERNAL)


@pytest.fixture
def spawn(service_build: BuiltService, tmp_path: Path) -> Iterator[Callable[..., Service]]:
    """Make `Service`s of the flavour under test, each in its own directory; kill them all after."""
    made: list[Service] = []

    def make(**kwargs: object) -> Service:
        root = tmp_path / f"svc{len(made)}"
        svc = Service(service_build, root, **kwargs)  # type: ignore[arg-type]
        made.append(svc)
        return svc

    yield make
    for svc in made:
        svc.kill()


@pytest.fixture(scope="module")
def shared_service(
    service_build: BuiltService, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Service]:
    """One running service with the default settings, shared by a module's read-only checks.

    Booting costs about a second; tests that only look (status codes, bodies, the metric names)
    share this one. Tests that count, signal or configure start their own with `spawn`.
    """
    if REMOTE is not None:  # a service already running elsewhere (tests/external.py)
        yield REMOTE  # type: ignore[misc]
        return
    svc = Service(service_build, tmp_path_factory.mktemp(f"shared-{service_build.flavour}"))
    try:
        yield svc.start()
    finally:
        svc.kill()
