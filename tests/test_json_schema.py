"""Every command's --json output against its documented schema (docs/schema/*.schema.json), with jsonschema.

The documents are real command output (`main(argv)` with stdout captured),
never hand-built records, and every command that prints results is here:
a parser walk checks that each one has --json, so a new command without it
fails this file.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

jsonschema = pytest.importorskip("jsonschema", reason="jsonschema is in the test extra: pip install -e '.[test]'")

from emu.outcome import OutcomeKind
from faultlab.cli.main import build_parser, main
from faultlab.report import SCHEMA_VERSION

from cached_kernels import vmlinux

SCHEMA_DIR = Path(__file__).resolve().parent.parent / "docs" / "schema"
INLINE = Path(__file__).resolve().parent.parent / "scenarios" / "inline_zeropad.toml"
BUILTIN = Path(__file__).resolve().parent.parent / "faultlab" / "builtin" / "a_zeropad_overread.toml"


def schema(name: str) -> dict:
    return json.loads((SCHEMA_DIR / f"{name}.schema.json").read_text())


def documents(capsys, argv: list[str], status: int = 0) -> list[dict]:
    assert main(argv) == status, argv
    lines = [ln for ln in capsys.readouterr().out.splitlines() if ln.strip()]
    assert lines, f"{argv}: no output"
    return [json.loads(ln) for ln in lines]


def check(name: str, docs: list[dict]) -> None:
    validator = jsonschema.Draft202012Validator(schema(name))
    for doc in docs:
        errors = sorted(validator.iter_errors(doc), key=lambda e: list(e.path))
        assert not errors, f"{name}: " + "; ".join(f"{list(e.path)}: {e.message}" for e in errors[:5])
        assert doc["schema_version"] == SCHEMA_VERSION


@pytest.mark.parametrize("path", sorted(SCHEMA_DIR.glob("*.schema.json")), ids=lambda p: p.stem)
def test_schemas_are_valid_and_versioned(path):
    s = json.loads(path.read_text())
    jsonschema.Draft202012Validator.check_schema(s)
    assert s["properties"]["schema_version"] == {**s["properties"]["schema_version"], "const": SCHEMA_VERSION}
    assert "schema_version" in s["required"] and s["$id"].endswith(f":{SCHEMA_VERSION}")


def test_outcome_vocabulary_is_the_emulators():
    """The schemas' outcome enum is emu.outcome.OutcomeKind: a new kind must be documented here too."""
    assert set(schema("run")["properties"]["outcome"]["enum"]) == {str(k) for k in OutcomeKind}
    assert set(schema("sweep")["properties"]["outcomes"]["propertyNames"]["enum"]) == {str(k) for k in OutcomeKind} | {"model-error"}


def _leaves(parser, prefix=()):
    for action in parser._actions:
        if action.__class__.__name__ == "_SubParsersAction":
            for name, sub in action.choices.items():
                yield from _leaves(sub, (*prefix, name))
            return
    yield prefix, parser


def test_every_command_has_json():
    """Every command prints results, so every one has --json (a new one without it fails here)."""
    leaves = dict(_leaves(build_parser()))
    assert len(leaves) >= 10, sorted(leaves)
    missing = [" ".join(k) for k, p in leaves.items() if "--json" not in p._option_string_actions]
    assert not missing, f"commands without --json: {missing}"


def test_run_and_matrix(capsys):
    docs = documents(capsys, ["matrix", "--json"])
    check("run", docs)
    assert len(docs) == 42 and {d["policy"] for d in docs} >= {"inject", "reclaim"} and {d["host"] for d in docs} == {"model"}
    traced = documents(capsys, ["run", str(BUILTIN), "--policy", "inject-reclaim", "--trace", "--json"])
    check("run", traced)
    (doc,) = traced
    assert doc["trace"] and doc["outcome"] == "fixed-up"
    check("run", documents(capsys, ["matrix", str(INLINE), "--json"]))


def test_invalid_documents_are_refused(capsys):
    """The validation has teeth: a real record with a field dropped, retyped or added fails."""
    (doc,) = documents(capsys, ["run", str(BUILTIN), "--policy", "inject", "--json"])
    v = jsonschema.Draft202012Validator(schema("run"))
    assert v.is_valid(doc)
    assert not v.is_valid({k: x for k, x in doc.items() if k != "guest_integrity"})
    assert not v.is_valid({**doc, "outcome": "exploded"})
    assert not v.is_valid({**doc, "schema_version": 1})
    assert not v.is_valid({**doc, "surprise": 1})


def test_sweep_shards_and_merge(capsys, tmp_path):
    one = documents(capsys, ["sweep", "full_name_hash", "--limit", "12", "--json"])
    check("sweep", one)
    assert one[0]["cases"] == 12
    files = []
    for k in (1, 2):
        docs = documents(capsys, ["sweep", "get_user_8", "--limit", "10", "--shard", f"{k}/2", "--json"])
        check("sweep", docs)
        files.append(tmp_path / f"s{k}.json")
        files[-1].write_text("".join(json.dumps(d) + "\n" for d in docs))
    merged = documents(capsys, ["sweep-merge", *map(str, files), "--json"])
    check("sweep", merged)
    assert merged[0]["shards"] == 2 and merged[0]["cases"] == 10


def test_sweep_merge_refuses_another_schema_version(capsys, tmp_path):
    docs = documents(capsys, ["sweep", "get_user_8", "--limit", "4", "--shard", "1/1", "--json"])
    (tmp_path / "old.json").write_text(json.dumps({**docs[0], "schema_version": 99}) + "\n")
    assert main(["sweep-merge", str(tmp_path / "old.json")]) == 2
    assert "schema_version 99" in capsys.readouterr().err


def test_list_and_explain(capsys):
    (lst,) = documents(capsys, ["list", "--json"])
    check("list", [lst])
    assert {p["name"] for p in lst["policies"]} >= {"panic", "inject", "inject-reclaim", "reclaim"}
    for argv in (["0x96000087", "--far", "0xffff00000000e000"], ["0x93c18007", "--el", "2", "--hpfar", "0x4000df0", "--far", "0xffff00000000dffd"],
                 ["0x5a000010"], ["0x86000010"]):
        (doc,) = documents(capsys, ["explain", *argv, "--json"])
        check("explain", [doc])
        assert main(["explain", *argv]) == 0
        text = capsys.readouterr().out
        # the same decoding: every field the JSON lists is a line of the text, with its value
        for f in doc["fields"]:
            assert any(line.split()[0] == f["name"] and (f"[{f['bits']}]" in line or f['name'] == 'imm16') for line in text.splitlines() if line.strip()), f
    (doc,) = documents(capsys, ["explain", "0x96000087", "--json"])
    s1ptw = next(f for f in doc["fields"] if f["name"] == "S1PTW")
    assert s1ptw["value"] == 1 and doc["architectural"] is False and doc["non_architectural"] == ["S1PTW"]


@pytest.mark.kernel
def test_kernel_commands(capsys):
    vm = vmlinux("7.2")
    (info,) = documents(capsys, ["kernel", "info", "sid", "--json"])
    check("kernel-info", [info])
    assert info["extable"]["entries"] == len(vm.extable)
    (fetched,) = documents(capsys, ["kernel", "fetch", "sid", "--json"])  # cached: no download
    check("kernel-fetch", [fetched])
    assert Path(fetched["kernels"][0]["path"]) == vm.path
    argv = ["kernel", "call", "sid", "full_name_hash", "0", "buf+4091", "5", "--buffer", "8192", "--write", "buf+4091=hello",
            "--protect", "buf+4096", "--dump", "buf+4091:5", "--json"]
    (call,) = documents(capsys, argv)
    check("kernel-call", [call])
    assert call["policy"] == "inject-reclaim" and set(call["defaults"]) == {"policy", "host", "task", "budget"}
    assert call["outcome"]["kind"] == "returned" and call["dumps"][0]["hex"] == b"hello".hex()
    assert any(e["housekeeping"] for e in call["events"]) and any(e["kind"] == "fixup" for e in call["events"])
    assert call["verdict"]["outcome"] == "fixed-up" and call["verdict"]["guest_integrity"] == "intact"
    (reclaimed,) = documents(capsys, [*argv, "--policy", "reclaim"])
    check("kernel-call", [reclaimed])
    assert reclaimed["verdict"]["guest_integrity"] == "reclaimed" and reclaimed["protected"][0]["state"] == "POISON"
    (traced,) = documents(capsys, [*argv, "--trace", "--policy", "inject"])
    check("kernel-call", [traced])
    assert traced["defaults"] == ["host", "task", "budget"] and traced["trace"]
    (sweep,) = documents(capsys, ["kernel", "sweep", "sid", "full_name_hash", "--limit", "6", "--json"])
    check("sweep", [sweep])
    assert sweep["symbol"] == "full_name_hash" and sweep["cases"] == 6
