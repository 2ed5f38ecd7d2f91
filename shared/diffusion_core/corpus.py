"""Public-domain English for the starter model, extracted from Debian packages with our own readers.

- Jane Austen's six novels: r-cran-janeaustenr, an R lazy-load database (zlib chunks holding
  serialised R character vectors, one line of the novel per string).
- The World English Bible: sword-text-web, a SWORD zText module (zlib blocks of OSIS XML).
"""

import re
import shutil
import struct
import subprocess
import tempfile
import zlib
from pathlib import Path

from .errors import InputError

AUSTEN_PACKAGE = "r-cran-janeaustenr"
BIBLE_PACKAGE = "sword-text-web"
AUSTEN_RDB = "usr/lib/R/site-library/janeaustenr/data/Rdata.rdb"
BIBLE_MODULE = "usr/share/sword/modules/texts/ztext/engWEB2015eb"


def debian_package(name: str, cache: Path) -> Path:
    """The package's files unpacked under cache/name (installed files are used when present)."""
    target = cache / name
    if target.is_dir():
        return target
    with tempfile.TemporaryDirectory() as tmp:
        result = subprocess.run(["apt-get", "download", name], cwd=tmp, capture_output=True, text=True)
        debs = list(Path(tmp).glob("*.deb"))
        if result.returncode != 0 or not debs:
            raise InputError(f"cannot download Debian package {name}: {result.stderr.strip()[:200]}")
        staging = cache / (name + ".tmp")
        shutil.rmtree(staging, ignore_errors=True)
        subprocess.run(["dpkg-deb", "-x", str(debs[0]), str(staging)], check=True)
        staging.rename(target)
    return target


def _r_strings(blob: bytes) -> list[str]:
    """Decode one serialised R character vector (XDR format, version 2 or 3)."""
    if blob[:2] != b"X\n":
        return []
    version = struct.unpack(">i", blob[2:6])[0]
    pos = 14
    if version == 3:
        (length,) = struct.unpack(">i", blob[pos : pos + 4])
        pos += 4 + length
    flags, count = struct.unpack(">ii", blob[pos : pos + 8])
    if flags & 0xFF != 16:  # STRSXP
        return []
    pos += 8
    strings = []
    for _ in range(count):
        _, size = struct.unpack(">ii", blob[pos : pos + 8])
        pos += 8
        if size < 0:
            strings.append("")
            continue
        strings.append(blob[pos : pos + size].decode("utf-8", errors="replace"))
        pos += size
    return strings


def austen_novels(root: Path) -> list[list[str]]:
    """Each novel as its list of lines, read chunk by chunk from the lazy-load database."""
    data = (root / AUSTEN_RDB).read_bytes()
    novels, pos = [], 0
    while pos < len(data):
        inflater = zlib.decompressobj()
        blob = inflater.decompress(data[pos + 4 :])
        novels.append(_r_strings(blob))
        pos = len(data) - len(inflater.unused_data)
    return [n for n in novels if n]


def austen_paragraphs(root: Path) -> list[str]:
    """Paragraphs of prose; chapter headings and title lines dropped."""
    paragraphs: list[str] = []
    for lines in austen_novels(root):
        current: list[str] = []
        for line in lines + [""]:
            if line.strip():
                current.append(line.strip())
                continue
            text = " ".join(current)
            current = []
            if len(text) > 40 and not text.isupper() and not re.match(r"(?i)^chapter\b", text):
                paragraphs.append(text.replace("_", ""))
    return paragraphs


def _osis_paragraphs(xml: str) -> list[str]:
    xml = re.sub(r"<note\b.*?</note>", "", xml, flags=re.S)
    xml = re.sub(r"<title\b.*?</title>", "", xml, flags=re.S)
    chunks = re.split(r'<div\b[^>]*type="x-p"[^>]*sID=[^>]*/>|<div\b[^>]*sID=[^>]*type="x-p"[^>]*/>', xml)
    out = []
    for chunk in chunks:
        text = " ".join(re.sub(r"<[^>]+>", " ", chunk).split())
        text = re.sub(r" ([,.;:!?’”)])", r"\1", text)
        text = re.sub(r"([“‘(]) ", r"\1", text)
        if len(text) > 40:
            out.append(text)
    return out


def bible_paragraphs(root: Path) -> list[str]:
    """Paragraphs of the World English Bible, notes and titles removed."""
    module = root / BIBLE_MODULE
    paragraphs: list[str] = []
    for testament in ("ot", "nt"):
        index = (module / f"{testament}.bzs").read_bytes()
        blocks = (module / f"{testament}.bzz").read_bytes()
        for i in range(0, len(index), 12):
            offset, size, _ = struct.unpack("<III", index[i : i + 12])
            paragraphs.extend(_osis_paragraphs(zlib.decompress(blocks[offset : offset + size]).decode("utf-8")))
    return paragraphs


def starter_corpus(cache: Path) -> dict[str, list[str]]:
    """{source: paragraphs} for every starter source."""
    cache.mkdir(parents=True, exist_ok=True)
    return {
        "austen": austen_paragraphs(debian_package(AUSTEN_PACKAGE, cache)),
        "web_bible": bible_paragraphs(debian_package(BIBLE_PACKAGE, cache)),
    }
