"""The report page's frame (style, filter script) and the helpers every section uses: escaping, notes for
missing or unreadable pieces, relative image links."""

from __future__ import annotations

import html
import json
import math
import os
from pathlib import Path
from urllib.parse import quote

from ospo.artifacts import ArtifactError


STAGE_ORDER = ("prompts", "perturb", "densify", "images", "questions", "score")  # then select-*, train-*, others


UNREADABLE = (OSError, ValueError, KeyError, TypeError, ArtifactError)  # what a malformed file raises here


COLOURS = ("#4c72b0", "#dd8452", "#55a868", "#c44e52", "#8172b3", "#937860")


esc = html.escape


def guarded(build) -> str:
    try:
        return build()
    except UNREADABLE as e:
        return note_html(e)


def note_html(message) -> str:
    return f'<p class="note">could not read: {esc(str(message))}</p>'


def missing_html(what: str = "") -> str:
    return f'<p class="missing">not run yet{esc(": " + what) if what else ""}</p>'


def read_json(path: Path):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except ValueError as e:
        raise ArtifactError(f"{path} is not valid JSON ({e})") from None


def json_object(path: Path) -> dict:
    data = read_json(path)
    if not isinstance(data, dict):
        raise ArtifactError(f"{path} holds a JSON {type(data).__name__}, not an object")
    return data


def fmt(v) -> str:
    if v is None:
        return "—"
    if isinstance(v, float):
        return f"{v:.4g}" if math.isfinite(v) and abs(v) < 1e4 else esc(str(v))
    return esc(str(v))


def is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def image_tag(path: Path, page_dir: Path, alt: str, cls: str = "") -> str:
    """An <img> linking `path` relative to the page, or a placeholder when the file does not exist."""
    if not path.is_file():
        return f'<div class="noimg">no image ({esc(path.name)})</div>'
    src = quote(Path(os.path.relpath(path, page_dir)).as_posix())
    return f'<img src="{esc(src)}" alt="{esc(alt)}" class="{cls}" loading="lazy">'


HEAD = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>%TITLE%</title><link rel="icon" href="data:,">
<style>
body { font: 14px/1.4 system-ui, sans-serif; margin: 1em 2em; color: #222; }
nav { position: sticky; top: 0; background: #fff; padding: .4em 0; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; margin: .5em 0; }
td, th { border: 1px solid #ddd; padding: 2px 6px; text-align: left; }
pre { background: #f6f6f6; padding: .6em; overflow: auto; max-height: 30em; }
.note { color: #a00; background: #fee; padding: .3em .6em; border-left: 4px solid #c00; }
.missing { color: #777; font-style: italic; }
.pair { border: 1px solid #ccc; border-radius: 4px; padding: .5em 1em; margin: .8em 0; }
.pair h4 { margin: .2em 0; } .tag { background: #eef; border-radius: 3px; padding: 0 .4em; font-weight: normal; }
.images, .tables, .plots { display: flex; flex-wrap: wrap; gap: 1em; align-items: flex-start; }
figure { margin: 0; } figcaption { font-size: 12px; color: #555; max-width: 260px; word-break: break-all; }
.images img { width: 256px; image-rendering: pixelated; } .images img.mask { width: 512px; }
img.curves, img.sheet { max-width: 100%; } .noimg { width: 256px; height: 64px; background: #eee; color: #777; }
tr.set td { background: #f3f3f3; } td.yes { color: #080; } td.no { color: #b00; } td.partial { color: #b70; }
tr.overall td { font-weight: bold; } svg.plot { background: #fff; border: 1px solid #eee; }
svg text { font: 10px sans-serif; fill: #333; } svg text.t { font-size: 12px; font-weight: bold; }
</style></head><body>
<h1>%TITLE%</h1><nav>"""


TAIL = """
<script>
(function () {
  var select = document.getElementById("category-filter");
  if (!select) { return; }
  function apply() {
    var pairs = document.querySelectorAll(".pair"), shown = 0;
    for (var i = 0; i < pairs.length; i++) {
      var keep = select.value === "" || pairs[i].getAttribute("data-category") === select.value;
      pairs[i].style.display = keep ? "" : "none";
      shown += keep ? 1 : 0;
    }
    document.getElementById("pair-count").textContent = shown + " of " + pairs.length + " pairs shown";
  }
  select.addEventListener("change", apply);
  apply();
})();
</script>
</body></html>
"""
