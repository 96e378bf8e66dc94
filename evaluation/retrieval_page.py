"""A static HTML page of retrieval results: FOLDER/index.html and FOLDER/thumbnails/*.jpg.

Each row is a query and its nearest images, as small JPEG thumbnails (THUMBNAIL px on the longest
side, one file per distinct image, never the full images; an image less than half that size is
enlarged by a whole factor, its pixels kept sharp): a green border when a result has the
query's class, red when not, grey when the classes are unknown; under each its class and its
distance. A row may carry extra pictures (a caption and an image file or a PIL image each, e.g.
heat-maps explaining a match), shown after its results. Links are relative, every name is escaped,
and the page has no script and reaches no network: it opens from disk, and the whole folder can be
copied or zipped. Thumbnails load lazily, so a page of 1,000 queries stays light in a browser.
"""
import hashlib
import html
import os
from dataclasses import dataclass, field

from PIL import Image

from datasets.image_dataset import load_rgb, to_rgb

THUMBNAIL = 128
MATCH, MISMATCH, UNKNOWN, QUERY = "#1a9850", "#d73027", "#999999", "#2166ac"  # reports.py's colours
STYLE = f"""body{{font-family:sans-serif;margin:1em;color:#222}}
section{{display:flex;flex-wrap:wrap;align-items:flex-start;gap:6px;margin:0 0 10px;padding:0 0 8px;
border-bottom:1px solid #ddd}}
figure{{margin:0;width:{THUMBNAIL + 8}px;font-size:11px;text-align:center;overflow-wrap:anywhere}}
img{{border:4px solid {UNKNOWN};max-width:{THUMBNAIL}px;max-height:{THUMBNAIL}px;display:block;margin:auto}}
.q img{{border-color:{QUERY}}} .m img{{border-color:{MATCH}}} .x img{{border-color:{MISMATCH}}}
.e img{{border-color:#fff;width:{THUMBNAIL}px;height:auto}} .q{{margin-right:14px}}
h2{{font-size:13px;width:100%;margin:4px 0}}"""


@dataclass
class Picture:
    """One thumbnail of the page. `source`: an image file's path or a PIL image. `caption`: text
    under it; `class_name`, `distance` and `match` (True, False or None when unknown) describe a
    result; `title`: the tooltip, e.g. the file's path relative to its folder."""
    source: object
    caption: str = ""
    class_name: str | None = None
    distance: float | None = None
    match: bool | None = None
    title: str = ""


@dataclass
class QueryRow:
    """A query, its results nearest first, and any extra pictures (e.g. explanations) after them."""
    query: Picture
    results: list = field(default_factory=list)
    extras: list = field(default_factory=list)
    heading: str = ""


class _Thumbnails:
    """Writes each distinct image's thumbnail once into `folder`; their names relative to the page."""

    def __init__(self, folder, size):
        self.folder, self.size, self.written = folder, size, {}
        os.makedirs(folder, exist_ok=True)

    def __call__(self, source):
        if isinstance(source, Image.Image):
            key = hashlib.sha1(source.mode.encode() + repr(source.size).encode() + source.tobytes()).hexdigest()
        else:
            key = hashlib.sha1(os.path.abspath(os.fspath(source)).encode()).hexdigest()
        name = self.written.get(key)
        if name is None:
            name = f"{key[:20]}.jpg"
            image = source.copy() if isinstance(source, Image.Image) else _read_small(os.fspath(source), self.size)
            image = _enlarged(to_rgb(image), self.size)
            image.thumbnail((self.size, self.size))
            image.save(os.path.join(self.folder, name), quality=85)
            self.written[key] = name
        return f"{os.path.basename(self.folder)}/{name}"


def _enlarged(image, size):
    """A small image (8-pixel digits) blown up by a whole factor towards `size`, its pixels kept
    sharp: shown at its own size it would be a speck."""
    factor = size // max(image.size)
    return image.resize((image.width * factor, image.height * factor), Image.NEAREST) if factor >= 2 else image


def _read_small(path, size):
    """The image at `path`, decoded at a reduced scale when it is a JPEG (much faster for photos)."""
    try:
        with Image.open(path) as image:
            image.draft("RGB", (size, size))
            return to_rgb(image)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError):
        return load_rgb(path)  # its one-line UserError


def _figure(picture, thumbnail, kind):
    lines = [picture.caption] if picture.caption else []
    if picture.class_name:
        lines.append(picture.class_name)
    if picture.distance is not None:
        lines.append(f"d = {picture.distance:.3f}")
    title = f' title="{html.escape(picture.title)}"' if picture.title else ""
    text = "<br>".join(html.escape(line) for line in lines)
    return (f'<figure class="{kind}"><img src="{html.escape(thumbnail)}" alt="{html.escape(picture.caption)}"'
            f'{title} loading="lazy"><figcaption>{text}</figcaption></figure>')


def write_page(folder, queries, title="Retrieval", note="", thumbnail_size=THUMBNAIL):
    """Write folder/index.html and folder/thumbnails/ for `queries` (QueryRow's); the page's path.
    `note`: a line under the title (e.g. which network, which images)."""
    os.makedirs(folder, exist_ok=True)
    thumbnails = _Thumbnails(os.path.join(folder, "thumbnails"), thumbnail_size)
    legend = (f'<span style="color:{QUERY}">blue</span>: query, <span style="color:{MATCH}">green</span>: same '
              f'class as the query, <span style="color:{MISMATCH}">red</span>: another class, '
              f'<span style="color:{UNKNOWN}">grey</span>: classes unknown; d: distance, nearest first')
    parts = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
             f"<title>{html.escape(title)}</title><style>{STYLE}</style></head><body>",
             f"<h1>{html.escape(title)}</h1>", f"<p>{html.escape(note)}</p>" if note else "",
             f"<p>{len(queries)} queries. {legend}.</p>"]
    for row in queries:
        parts.append("<section>")
        if row.heading:
            parts.append(f"<h2>{html.escape(row.heading)}</h2>")
        parts.append(_figure(row.query, thumbnails(row.query.source), "q"))
        for picture in row.results:
            kind = "u" if picture.match is None else "m" if picture.match else "x"
            parts.append(_figure(picture, thumbnails(picture.source), kind))
        for picture in row.extras:
            parts.append(_figure(picture, thumbnails(picture.source), "e"))
        parts.append("</section>")
    parts.append("</body></html>\n")
    path = os.path.join(folder, "index.html")
    with open(path, "w", encoding="utf-8") as handle:
        handle.write("\n".join(part for part in parts if part))
    return path
