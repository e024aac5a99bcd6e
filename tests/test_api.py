"""faultlab.api beyond docs/api.md's examples: kernels by suite name, errors that say what to do, the fixtures' settings."""
from __future__ import annotations

import pytest

from faultlab import api
from faultlab.kernel.fetch import KernelFetchError
from kimage.elf import Vmlinux, VmlinuxError

from cached_kernels import vmlinux

pytest_plugins = ["pytester"]


@pytest.mark.kernel
@pytest.mark.parametrize("suite, version", [("bookworm", "6.1"), ("sid", "7.2")])
def test_open_kernel_by_suite_name_is_the_cached_file(suite, version):
    expected = vmlinux(version)
    vm = api.open_kernel(suite)
    assert vm.path == expected.path and f"{vm.version.major}.{vm.version.minor}" == version
    shelf = api.Shelf()
    assert api.open_kernel(suite, shelf=shelf) is api.open_kernel(str(expected.path), shelf=shelf)  # parsed once


def test_a_suite_not_cached_says_how_to_fetch_it(tmp_path, monkeypatch):
    monkeypatch.setenv("FAULTLAB_KCACHE", str(tmp_path))  # an empty cache
    with pytest.raises(KernelFetchError, match="run `faultlab kernel fetch sid`"):
        api.open_kernel("sid")
    with pytest.raises(KernelFetchError, match="no such file"):
        api.open_kernel(tmp_path / "nope")


def test_vmlinux_open_of_a_suite_name_points_at_the_api():
    with pytest.raises(VmlinuxError, match=r"cannot read sid: .*a suite name\? faultlab.api.open_kernel\('sid'\) opens the cached kernel"):
        Vmlinux.open("sid")


def test_builtin_by_name_and_unknown(tmp_path):
    assert api.builtin("a-zeropad-overread") == api.builtin("a_zeropad_overread")
    assert api.builtin("a-zeropad-overread").name == "a_zeropad_overread.toml"
    with pytest.raises(api.ScenarioError, match="no built-in scenario 'zzz'"):
        api.builtin("zzz")
    assert api.policies()[0] == "panic" and api.suites() == {"bookworm": "6.1", "sid": "7.2"}


def test_run_scenario_agrees_with_the_matrix_record(capsys):
    import json

    from faultlab.cli.main import main

    records = api.run_scenario(api.builtin("c-gup-kernel-alias"))
    assert main(["matrix", str(api.builtin("c-gup-kernel-alias")), "--json"]) == 0
    cli = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r.as_dict() for r in records] == [{k: v for k, v in c.items() if k not in ("schema_version", "host")} for c in cli]


def test_fixture_settings(pytester):
    pytester.makepyfile('''
import pytest

@pytest.mark.faultlab(policy="panic")
def test_marker(faultlab_lab):
    assert faultlab_lab.policy.name == "panic"

def test_default(faultlab_lab):
    assert faultlab_lab.policy.name == "inject-reclaim"
    assert "full_name_hash" in faultlab_lab.symbols

@pytest.mark.parametrize("faultlab_lab", [{"policy": "reclaim"}], indirect=True)
def test_param_dict(faultlab_lab):
    assert faultlab_lab.policy.name == "reclaim"

@pytest.mark.faultlab(kernel="no-such-kernel")
def test_missing_kernel_skips(faultlab_kernel):
    raise AssertionError("not reached")
''')
    # the plugin comes with the installed package (its pytest11 entry point); name it when it is not installed
    installed = pytester._request.config.pluginmanager.has_plugin("faultlab")
    result = pytester.runpytest_inprocess("-rs", *([] if installed else ["-p", "faultlab.pytest_plugin"]))
    result.assert_outcomes(passed=3, skipped=1)
    result.stdout.fnmatch_lines(["*no-such-kernel*not found*"])
