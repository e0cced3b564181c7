"""MediaWiki XML dumps: articles as plain prose."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

from corpora.readers.base import Doc, ReaderConfig, Reject, _check_text
from corpora.readers.compression import _STREAM_ERRORS, open_binary

# File/image links and categories carry no prose; templates and tables are dropped by strip_code.
_LEFTOVER_REF = re.compile(r"<ref[^>/]*/>|<ref[^>]*>.*?</ref>", re.S | re.I)
_LEFTOVER_TAG = re.compile(r"</?[a-zA-Z][a-zA-Z0-9]*(\s[^<>]*)?/?>")
_WIKI_DROP_LINK = re.compile(r"^\s*:?\s*(file|image|category|media)\s*:", re.I)


def wikitext_to_text(wikitext: str) -> str:
    """Wiki markup to plain prose with mwparserfromhell: headings kept as lines, links as their text."""
    import mwparserfromhell

    from mwparserfromhell.nodes import Tag, Wikilink

    def keep(node) -> bool:
        if isinstance(node, Wikilink):
            return not _WIKI_DROP_LINK.match(str(node.title))
        if isinstance(node, Tag):
            return str(node.tag).lower() not in ("ref", "gallery", "table", "math", "references")
        return True

    def prune(code) -> None:
        # Rebuild node lists instead of Wikicode.remove(), which searches the whole tree on every call.
        code.nodes = [n for n in code.nodes if keep(n)]
        for node in code.nodes:
            for child in node.__children__():
                prune(child)

    code = mwparserfromhell.parse(wikitext)
    prune(code)
    text = code.strip_code(normalize=True, collapse=True)
    # markup mwparserfromhell leaves as text (e.g. a <ref> it could not pair inside other markup)
    text = _LEFTOVER_REF.sub("", text)
    text = _LEFTOVER_TAG.sub("", text)
    lines = [re.sub(r"[ \t]+", " ", ln).strip() for ln in text.splitlines()]
    text = "\n".join(ln for ln in lines if ln)
    return re.sub(r"\n{3,}", "\n\n", text).strip()


def read_mediawiki(path: Path, cfg: ReaderConfig) -> Iterator[Doc | Reject]:
    """Articles (namespace 0) of a MediaWiki XML dump; redirects and other namespaces skipped."""
    import xml.etree.ElementTree as ET

    stream = open_binary(path)
    n = 0
    try:
        for _, elem in ET.iterparse(stream, events=("end",)):
            if _local(elem.tag) != "page":
                continue
            n += 1
            fields = {_local(c.tag): c for c in elem}
            title = (fields["title"].text or "") if "title" in fields else ""
            source = f"{path}#{title or n}"
            ns = fields["ns"].text if "ns" in fields else "0"
            revision = fields.get("revision")
            text_el = next((c for c in revision if _local(c.tag) == "text"), None) if revision is not None else None
            wikitext = (text_el.text or "") if text_el is not None else ""
            elem.clear()
            if ns != "0":
                yield Reject(source, "wiki_not_article", f"namespace {ns}")
                continue
            if "redirect" in fields or wikitext.lstrip().lower().startswith("#redirect"):
                yield Reject(source, "wiki_redirect")
                continue
            text = wikitext_to_text(wikitext)
            if title:
                text = f"{title}\n\n{text}" if text else ""
            if (bad := _check_text(text, source, cfg)) is not None:
                yield bad
                continue
            page_id = fields["id"].text if "id" in fields else None
            yield Doc(text, source, {"title": title, "page_id": page_id})
    except ET.ParseError as e:
        yield Reject(f"{path}#{n + 1}", "bad_xml", str(e)[:200])
    except _STREAM_ERRORS as e:
        yield Reject(f"{path}#{n + 1}", "truncated_stream", f"{type(e).__name__}: {e}"[:200])
    finally:
        stream.close()


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]
