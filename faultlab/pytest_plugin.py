"""pytest plugin: scenario files are tests, one per (scenario, policy).

Registered through the `pytest11` entry point, so `pytest scenarios/` (or any
path holding scenario `.toml` files) runs them. A file is a scenario when it
has a routine table in any form `faultlab run` accepts (`[routine]`,
`[ routine ]`, an inline `routine = {...}`); other TOML files are left alone.
A scenario file that cannot be loaded (not UTF-8, too large, bad TOML, bad
fields) is a collection error with the one-line message of `faultlab run`.

A (scenario, policy) for which the scenario states no expectation is
skipped as unjudged, never passed. A scenario naming several kernels
(`vmlinux = ["bookworm", "sid"]`) gives one item per kernel and policy.
Scenarios whose routine is a vmlinux symbol are marked `kernel` and skip,
with the reason (how to fetch the kernel), when that vmlinux is not on this
machine; one `VmlinuxShelf` per session opens each vmlinux once.

`--faultlab-host real` runs vmlinux scenarios on the image's own fault path
(`--host real` of `faultlab run/matrix`); the default is the Python model.
The host is a run option, not a scenario field: a scenario states what the
kernel does, and both hosts must meet the same expectations.

Fixtures for your own tests (docs/api.md):
    faultlab_lab         a fresh Lab with guest_asm's kernel routines assembled
    faultlab_kernel      a real vmlinux by suite (default sid), skipped when not cached
    faultlab_kernel_lab  that kernel booted in a lab (a KernelRig)
Their policy (default inject-reclaim), kernel and host come from indirect
parametrization (`request.param`: a policy name, or a dict of them) or from
the marker `@pytest.mark.faultlab(policy=..., kernel=..., host=...)`.
"""
from __future__ import annotations

import re

import pytest

from faultlab.kernel.lab import VmlinuxShelf
from faultlab.runner import RunError, run, vmlinux_missing
from faultlab.scenario import MAX_SCENARIO_BYTES, ScenarioError, load
from faultlab.stack import HOSTS

_SHELF = pytest.StashKey[VmlinuxShelf]()


def pytest_addoption(parser) -> None:
    parser.getgroup("faultlab").addoption(
        "--faultlab-host", choices=HOSTS, default="model",
        help="vmlinux scenarios: the host fault path is the Python model of fault.c (model) or the image's own do_mem_abort (real)",
    )


def _host(config) -> str:
    try:
        return config.getoption("faultlab_host")
    except ValueError:  # the plugin was loaded after option parsing
        return "model"


def pytest_configure(config) -> None:
    config.stash[_SHELF] = VmlinuxShelf(_host(config))
    config.addinivalue_line(
        "markers", "faultlab(policy=None, kernel=None, host=None): settings of the faultlab_lab / faultlab_kernel / faultlab_kernel_lab fixtures",
    )


def _shelf(config) -> VmlinuxShelf:
    if _SHELF not in config.stash:  # the plugin was loaded after configure (pytester, -p late)
        config.stash[_SHELF] = VmlinuxShelf(_host(config))
    return config.stash[_SHELF]


# A routine table at the top level: `[routine]` (spaces allowed inside the brackets) or `routine = {`.
_ROUTINE = re.compile(rb"^[ \t]*(?:\[[ \t]*routine[ \t]*\]|routine[ \t]*=[ \t]*\{)", re.MULTILINE)


def is_scenario(file_path) -> bool:
    """Whether a .toml file claims to be a scenario; read as bytes (bounded), so any file can be asked."""
    try:
        with open(file_path, "rb") as f:
            head = f.read(MAX_SCENARIO_BYTES + 1)
    except OSError:
        return False
    return _ROUTINE.search(head) is not None


def pytest_collect_file(parent, file_path):
    if file_path.suffix == ".toml" and is_scenario(file_path):
        return ScenarioFile.from_parent(parent, path=file_path)
    return None


class ScenarioFile(pytest.File):
    def collect(self):
        try:
            scenario = load(self.path)
        except ScenarioError as exc:
            raise self.CollectError(str(exc)) from None
        for variant in scenario.variants():  # one per kernel of a `vmlinux = [...]` list
            for policy in variant.policies:
                item = ScenarioItem.from_parent(self, name=f"{variant.name}[{policy}]", scenario=variant, policy=policy)
                if variant.routine.kind == "vmlinux":
                    item.add_marker(pytest.mark.kernel)
                yield item


class ScenarioFailure(Exception):
    def __init__(self, record) -> None:
        super().__init__(record)
        self.record = record


class ScenarioItem(pytest.Item):
    def __init__(self, *, scenario, policy, **kw) -> None:
        super().__init__(**kw)
        self.scenario = scenario
        self.policy = policy

    def setup(self) -> None:
        missing = vmlinux_missing(self.scenario, _shelf(self.config))
        if missing is not None:
            pytest.skip(f"{self.scenario.path}: {missing}")

    def runtest(self) -> None:
        if not self.scenario.judged(self.policy):
            pytest.skip(f"unjudged: {self.scenario.path} states no expectation for policy {self.policy}")
        try:
            record = run(self.scenario, self.policy, kernels=_shelf(self.config))
        except RunError as exc:
            raise ScenarioFailure(str(exc)) from None
        if not record.passed:
            raise ScenarioFailure(record)

    def repr_failure(self, excinfo):
        if not isinstance(excinfo.value, ScenarioFailure):
            return super().repr_failure(excinfo)
        record = excinfo.value.record
        if isinstance(record, str):
            return f"{self.scenario.path}: {record}"
        v = record.verdict
        lines = [f"{self.scenario.path}: {self.scenario.name} under {self.policy} ({_shelf(self.config).host} host)"]
        lines += [f"  expected/got: {f}" for f in record.failures]
        lines.append(f"  verdict: {v.outcome} ({v.detail}); guest {v.guest_text()}; confidentiality {v.confidentiality_text()}")
        lines.append("  last events:")
        lines += [f"    {e}" for e in record.result.events[-12:]]
        return "\n".join(lines)

    def reportinfo(self):
        return self.path, 0, f"scenario {self.scenario.name} [{self.policy}]"


# ---------------------------------------------------------------- fixtures
DEFAULT_POLICY = "inject-reclaim"
DEFAULT_KERNEL = "sid"


def _setting(request, name: str, default):
    """A fixture setting: indirect parametrization first (a policy name, or a dict), then the marker, then the default."""
    param = getattr(request, "param", None)
    if isinstance(param, dict) and name in param:
        return param[name]
    if isinstance(param, str) and name == "policy":
        return param
    marker = request.node.get_closest_marker("faultlab")
    if marker is not None and marker.kwargs.get(name) is not None:
        return marker.kwargs[name]
    return default


@pytest.fixture
def faultlab_lab(request):
    """A fresh `Lab` under the policy (default inject-reclaim) with guest_asm's kernel routines assembled."""
    from faultlab import api

    return api.lab(_setting(request, "policy", DEFAULT_POLICY))


@pytest.fixture
def faultlab_kernel(request):
    """A real vmlinux (default: the cached sid kernel, Linux 7.2), opened once per session; skips, saying how to
    fetch it, when it is not on this machine."""
    shelf = _shelf(request.config)
    spec = _setting(request, "kernel", DEFAULT_KERNEL)
    missing = shelf.missing(spec)
    if missing is not None:
        pytest.skip(missing)
    return shelf.open(spec)


@pytest.fixture
def faultlab_kernel_lab(request, faultlab_kernel):
    """`faultlab_kernel` booted under the policy (a `KernelRig`: .lab, .protect(va), .call(symbol, *args))."""
    from faultlab import api

    host = _setting(request, "host", _shelf(request.config).host)
    return api.kernel_lab(faultlab_kernel, _setting(request, "policy", DEFAULT_POLICY), host=host)
