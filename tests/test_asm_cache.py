"""kasm.AsmCache: a memoised assembly is the assembly, and it goes stale exactly when an input changes."""
from __future__ import annotations

from pathlib import Path

import pytest

from kasm import AsmCache, AsmError, Image, assemble, assemble_file
from kimage.extable_format import NUMBERING_V6_1, NUMBERING_V7

GUEST_ASM = Path(__file__).resolve().parent.parent / "guest_asm"
BASE = 0xFFFF_8000_0800_0000


def _same(a: Image, b: Image) -> None:
    assert a.data == b.data
    assert (a.base, a.extable_addr, a.extable_size, a.numbering) == (b.base, b.extable_addr, b.extable_size, b.numbering)
    assert a.extable == b.extable
    assert a.symbols == b.symbols and a.local_symbols == b.local_symbols and a.sizes == b.sizes
    assert a.lines == b.lines and a.sections == b.sections


@pytest.mark.parametrize("name", ["uaccess.S", "gup.S", "vmm.S", "word_at_a_time.S"])
def test_cached_assembly_is_byte_identical_to_uncached(name):
    path = GUEST_ASM / name
    cache = AsmCache()
    first = cache.assemble_file(path, BASE)
    second = cache.assemble_file(path, BASE)
    assert (cache.stats.misses, cache.stats.hits) == (1, 1)
    plain = assemble_file(path, BASE)
    _same(first, plain)
    _same(second, plain)


def test_handed_out_images_do_not_share_mutable_state():
    cache = AsmCache()
    path = GUEST_ASM / "uaccess.S"
    first = cache.assemble_file(path, BASE)
    first.symbols.clear()
    first.extable.clear()
    first.lines.clear()
    again = cache.assemble_file(path, BASE)
    assert cache.stats.hits == 1
    _same(again, assemble_file(path, BASE))


def test_options_are_part_of_the_key():
    cache = AsmCache()
    text = ".text\nf: adr x0, f\nret\n"
    a = cache.assemble(text, 0x10000)
    b = cache.assemble(text, 0x20000)
    c = cache.assemble(text, 0x10000, filename="other.S")
    assert cache.stats.misses == 3 and cache.stats.hits == 0
    assert a.symbols["f"] == 0x10000 and b.symbols["f"] == 0x20000
    assert c.lines[0x10000].file == "other.S"


def _project(tmp_path: Path, value: int) -> tuple[Path, Path]:
    inc = tmp_path / "inc"
    inc.mkdir(exist_ok=True)
    (inc / "consts.h").write_text(f"#define VALUE {value}\n")
    src = tmp_path / "main.S"
    src.write_text('#include "consts.h"\n.text\nf: mov x0, #VALUE\nret\n')
    return src, inc


def test_editing_an_included_file_invalidates(tmp_path):
    src, inc = _project(tmp_path, 1)
    cache = AsmCache()
    one = cache.assemble_file(src, 0x10000, include_dirs=[inc])
    (inc / "consts.h").write_text("#define VALUE 2\n")
    two = cache.assemble_file(src, 0x10000, include_dirs=[inc])
    assert cache.stats.stale == 1
    assert one.data != two.data
    _same(two, assemble_file(src, 0x10000, include_dirs=[inc]))
    cache.assemble_file(src, 0x10000, include_dirs=[inc])
    assert cache.stats.hits == 1


def test_a_new_file_that_shadows_an_include_invalidates(tmp_path):
    src, inc = _project(tmp_path, 1)
    cache = AsmCache()
    one = cache.assemble_file(src, 0x10000, include_dirs=[inc])
    (tmp_path / "consts.h").write_text("#define VALUE 3\n")  # the file's own directory is searched first
    two = cache.assemble_file(src, 0x10000, include_dirs=[inc])
    assert cache.stats.stale == 1 and one.data != two.data
    _same(two, assemble_file(src, 0x10000, include_dirs=[inc]))


def test_dot_include_files_are_tracked_too(tmp_path):
    (tmp_path / "body.s").write_text("mov x0, #5\n")
    src = tmp_path / "main.S"
    src.write_text('.text\nf:\n.include "body.s"\nret\n')
    cache = AsmCache()
    one = cache.assemble_file(src, 0x10000)
    (tmp_path / "body.s").write_text("mov x0, #6\n")
    two = cache.assemble_file(src, 0x10000)
    assert one.data != two.data and cache.stats.stale == 1


def test_editing_the_source_file_is_a_new_entry(tmp_path):
    src, inc = _project(tmp_path, 1)
    cache = AsmCache()
    one = cache.assemble_file(src, 0x10000, include_dirs=[inc])
    src.write_text('#include "consts.h"\n.text\nf: mov x1, #VALUE\nret\n')
    two = cache.assemble_file(src, 0x10000, include_dirs=[inc])
    assert cache.stats.misses == 2 and one.data != two.data


@pytest.mark.parametrize("text", [
    ".text\nf: mov x0, #1\n  bogus x1\n",
    '#include "missing.h"\n',
    ".macro m\nnop\n",
])
def test_errors_are_unchanged_and_never_memoised(text):
    cache = AsmCache()
    with pytest.raises(AsmError) as plain:
        assemble(text, 0x10000, filename="bad.S")
    for _ in range(2):
        with pytest.raises(AsmError) as cached:
            cache.assemble(text, 0x10000, filename="bad.S")
        assert str(cached.value) == str(plain.value)
        assert (cached.value.file, cached.value.line) == (plain.value.file, plain.value.line)
    assert len(cache) == 0 and cache.stats.hits == 0


def test_unreadable_file_error_is_unchanged(tmp_path):
    missing = tmp_path / "nope.S"
    with pytest.raises(AsmError) as plain:
        assemble_file(missing, 0x10000)
    with pytest.raises(AsmError) as cached:
        AsmCache().assemble_file(missing, 0x10000)
    assert str(cached.value) == str(plain.value)


def test_the_cache_is_bounded_least_recently_used_out():
    cache = AsmCache(max_entries=2)
    texts = [f".text\nf: mov x0, #{i}\nret\n" for i in range(3)]
    cache.assemble(texts[0], 0x10000)
    cache.assemble(texts[1], 0x10000)
    cache.assemble(texts[0], 0x10000)  # 0 is now the most recent
    cache.assemble(texts[2], 0x10000)  # evicts 1
    assert len(cache) == 2
    cache.assemble(texts[0], 0x10000)
    assert cache.stats.hits == 2
    cache.assemble(texts[1], 0x10000)
    assert cache.stats.misses == 4
    with pytest.raises(ValueError):
        AsmCache(max_entries=0)


def test_numbering_is_part_of_the_key():
    """The extable type numbers differ between kernel generations, so the same source gives other bytes."""
    path = GUEST_ASM / "uaccess.S"
    cache = AsmCache()
    v7 = cache.assemble_file(path, BASE, numbering=NUMBERING_V7)
    v61 = cache.assemble_file(path, BASE, numbering=NUMBERING_V6_1)
    assert cache.stats.misses == 2
    _same(v61, assemble_file(path, BASE, numbering=NUMBERING_V6_1))
    _same(v7, assemble_file(path, BASE, numbering=NUMBERING_V7))
    assert v7.numbering is NUMBERING_V7 and v61.numbering is NUMBERING_V6_1


def test_lab_assembles_through_its_cache():
    from faultlab.lab import Lab

    cache = AsmCache()
    for _ in range(2):
        lab = Lab("inject-reclaim", asm_cache=cache)
        image = lab.load_asm(GUEST_ASM / "uaccess.S")
        _same(image, assemble_file(GUEST_ASM / "uaccess.S", lab.text_base))
    assert (cache.stats.misses, cache.stats.hits) == (1, 1)


# ------------------------------------------------------------------ the disk cache
@pytest.mark.parametrize("name", ["uaccess.S", "word_at_a_time.S"])
def test_disk_cache_serves_a_new_process_the_same_image(tmp_path, name):
    path = GUEST_ASM / name
    first = AsmCache(disk=tmp_path).assemble_file(path, BASE)
    other = AsmCache(disk=tmp_path)  # a new process: nothing in memory
    again = other.assemble_file(path, BASE)
    assert (other.stats.misses, other.stats.disk_hits) == (0, 1)
    _same(again, first)
    _same(again, assemble_file(path, BASE))


@pytest.mark.parametrize("damage", ["garbage", "truncated", "empty", "other-entry"])
def test_a_damaged_disk_entry_is_ignored_and_rewritten(tmp_path, damage):
    text = ".text\nf: mov x0, #1\nret\n"
    AsmCache(disk=tmp_path).assemble(text, BASE)
    other_text = ".text\ng: mov x0, #2\nret\n"
    AsmCache(disk=tmp_path / "other").assemble(other_text, BASE)
    (entry,) = [p for p in tmp_path.glob("??/*.pickle")]
    (foreign,) = list((tmp_path / "other").glob("??/*.pickle"))
    data = entry.read_bytes()
    entry.write_bytes({"garbage": b"\x80\x05not a pickle", "truncated": data[: len(data) // 2], "empty": b"",
                       "other-entry": foreign.read_bytes()}[damage])
    cache = AsmCache(disk=tmp_path)
    image = cache.assemble(text, BASE)
    assert (cache.stats.misses, cache.stats.disk_hits) == (1, 0) and cache.stats.disk_bad == 1
    _same(image, assemble(text, BASE))
    fresh = AsmCache(disk=tmp_path)
    fresh.assemble(text, BASE)
    assert fresh.stats.disk_hits == 1  # rewritten whole


def test_disk_entries_go_stale_when_an_include_changes(tmp_path):
    inc = tmp_path / "inc"
    inc.mkdir()
    (inc / "val.h").write_text("#define VAL 1\n")
    text = '#include "val.h"\n.text\nf: mov x0, #VAL\nret\n'
    a = AsmCache(disk=tmp_path / "c").assemble(text, BASE, include_dirs=[inc])
    (inc / "val.h").write_text("#define VAL 2\n")
    cache = AsmCache(disk=tmp_path / "c")
    b = cache.assemble(text, BASE, include_dirs=[inc])
    assert cache.stats.misses == 1 and a.data != b.data
    _same(b, assemble(text, BASE, include_dirs=[inc]))


def test_an_unwritable_cache_dir_only_costs_assembly(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    cache = AsmCache(disk=blocker)
    _same(cache.assemble(".text\nf: ret\n", BASE), assemble(".text\nf: ret\n", BASE))
