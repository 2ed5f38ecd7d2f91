import struct
import zlib

from diffusion_core.corpus import AUSTEN_RDB, _osis_paragraphs, austen_paragraphs


def _r_character_vector(strings):
    """Serialise a character vector the way R's saveRDS/lazy-load does (XDR, version 3)."""
    out = b"X\n" + struct.pack(">iii", 3, 0x040201, 0x030500) + struct.pack(">i", 5) + b"UTF-8"
    out += struct.pack(">ii", 16, len(strings))
    for s in strings:
        data = s.encode()
        out += struct.pack(">ii", 0x00040009, len(data)) + data
    return out


def test_austen_reader_joins_lines_into_paragraphs_and_drops_headings(tmp_path):
    novel = [
        "EMMA",
        "",
        "CHAPTER I",
        "",
        "Emma Woodhouse, handsome, clever, and rich, with a",
        "comfortable home and happy disposition.",
        "",
        "Short.",
        "",
    ]
    blob = _r_character_vector(novel)
    rdb = tmp_path / AUSTEN_RDB
    rdb.parent.mkdir(parents=True)
    rdb.write_bytes(
        (len(blob)).to_bytes(4, "big") + zlib.compress(blob) + (len(blob)).to_bytes(4, "big") + zlib.compress(blob)
    )
    paragraphs = austen_paragraphs(tmp_path)
    assert (
        paragraphs == ["Emma Woodhouse, handsome, clever, and rich, with a comfortable home and happy disposition."] * 2
    )


def test_osis_reader_keeps_the_words_and_drops_notes_titles_and_tags():
    xml = (
        '<div sID="p1" type="x-p"/><title type="main">Genesis</title><w lemma="x">In</w> <w lemma="y">the</w> '
        'beginning, God created the heavens<note placement="foot">or, sky</note> and the earth . '
        '<div eID="p1" type="x-p"/><div sID="p2" type="x-p"/>'
        "The earth was formless and empty, and darkness was over the deep."
    )
    assert _osis_paragraphs(xml) == [
        "In the beginning, God created the heavens and the earth.",
        "The earth was formless and empty, and darkness was over the deep.",
    ]
