# SPDX-License-Identifier: GPL-2.0-only
"""Self-contained HTML flame graph: well-formed, offline, data intact, hostile names inert."""
from __future__ import annotations

import json
import re
import shutil
import subprocess
from html.parser import HTMLParser

import pytest

from memlens.output.flamegraph import build_tree, render_html, write_html
from memlens.output.folded import fold

FOLDED = {"leaker;main;leak_a;malloc": 23 * 1024, "leaker;main;leak_b;malloc": 300,
          "leaker;main": 5, "other;[missed user stack]": 7}
HOSTILE = "</script><script>alert(1)</script><img src=x onerror=alert(2)>&amp;"


class Page(HTMLParser):
    """Collects tags, script blocks and attributes that could load something remote."""

    def __init__(self):
        super().__init__()
        self.tags, self.scripts, self.sources = [], [], []
        self._in_script = None

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        attrs = dict(attrs)
        self.sources += [v for k, v in attrs.items() if k in ("src", "href") and v]
        if tag == "script":
            self._in_script = attrs
            self.scripts.append([attrs, ""])

    def handle_endtag(self, tag):
        if tag == "script":
            self._in_script = None

    def handle_data(self, data):
        if self._in_script is not None:
            self.scripts[-1][1] += data


def parse(text):
    page = Page()
    page.feed(text)
    page.close()
    return page


def data_blob(page):
    blobs = [body for attrs, body in page.scripts if attrs.get("type") == "application/json"]
    assert len(blobs) == 1
    return json.loads(blobs[0])


def unfold(node, path=()):
    """Folded stacks back from the tree: a node's own count is its value minus its children's."""
    out = {}
    children = node.get("c", [])
    here = path + (node["n"],) if path or node["n"] != "all" else ()
    own = node["v"] - sum(c["v"] for c in children)
    if own:
        out[";".join(here)] = own
    for c in children:
        out.update(unfold(c, here))
    return out


def test_page_written_and_data_intact(tmp_path):
    path = tmp_path / "leaks.html"
    write_html(path, FOLDED, title="memleak: outstanding", count_name="bytes")
    text = path.read_text(encoding="utf-8")
    page = parse(text)
    assert page.tags[:3] == ["html", "head", "meta"] and "body" in page.tags
    assert [a.get("type") for a, _ in page.scripts] == ["application/json", None]
    data = data_blob(page)
    assert data["title"] == "memleak: outstanding" and data["count_name"] == "bytes"
    assert data["root"]["v"] == sum(FOLDED.values())
    assert unfold(data["root"]) == FOLDED
    for frame in ("leak_a", "leak_b", "malloc", "[missed user stack]"):
        assert frame in text


def test_offline_no_remote_references(tmp_path):
    text = render_html(FOLDED)
    page = parse(text)
    assert page.sources == []
    assert "http://" not in text and "https://" not in text
    assert "<link" not in text and "@import" not in text


def test_hostile_frames_and_title_are_inert():
    folded = {f"evil;{HOSTILE}": 3, "ok": 1}
    text = render_html(folded, title=f"t {HOSTILE} @DATA@")
    page = parse(text)
    # Still exactly one data block and one script: nothing closed the JSON block early.
    assert len(page.scripts) == 2
    assert text.count("</script>") == 2
    assert "<img" not in text and "<script>alert" not in text
    data = data_blob(page)
    assert data["title"] == f"t {HOSTILE} @DATA@"
    assert unfold(data["root"]) == folded
    title = re.search(r"<title>(.*)</title>", text).group(1)
    assert "&lt;/script&gt;" in title and "{" not in title
    # The script never parses names as HTML.
    script = page.scripts[1][1]
    assert "innerHTML" not in script and "insertAdjacentHTML" not in script


def test_entries_accepted_like_folded():
    entries = [(["leaker"], ["malloc", "leak_a", "main"], 10), (["leaker"], ["main"], 2)]
    data = data_blob(parse(render_html(entries)))
    assert unfold(data["root"]) == fold(entries) == {"leaker;main;leak_a;malloc": 10,
                                                     "leaker;main": 2}


def test_build_tree_sorted_and_summed():
    tree = build_tree({"b;x": 1, "a;y": 2, "a;x": 3})
    assert tree == {"n": "all", "v": 6, "c": [
        {"n": "a", "v": 5, "c": [{"n": "x", "v": 3}, {"n": "y", "v": 2}]},
        {"n": "b", "v": 1, "c": [{"n": "x", "v": 1}]}]}


# A DOM just large enough for the page script: elements by id, created divs, listeners.
DOM_STUB = r"""
const html = require("fs").readFileSync(process.argv[2], "utf8");
const json = html.match(/<script type="application\/json" id="flamedata">([^]*?)<\/script>/)[1];
const code = html.match(/<script>\n([^]*?)<\/script>/)[1];
function El(id) {
  this.id = id; this.style = {}; this.children = []; this.listeners = {};
  this._text = ""; this.className = ""; this.value = ""; this.offsetWidth = 50;
}
El.prototype.appendChild = function (c) {
  if (c.isFragment) { this.children.push(...c.children); } else { this.children.push(c); }
};
El.prototype.addEventListener = function (ev, fn) { this.listeners[ev] = fn; };
Object.defineProperty(El.prototype, "textContent", {
  get() { return this._text; },
  set(v) { this._text = String(v); this.children = []; },
});
const byId = {};
["title", "reset", "search", "status", "graph", "detail", "tip", "flamedata"].forEach(
  (id) => { byId[id] = new El(id); });
byId.flamedata._text = json;
global.window = { innerWidth: 1000 };
global.document = {
  title: "",
  getElementById: (id) => byId[id],
  createElement: () => new El(null),
  createDocumentFragment: () => { const f = new El(null); f.isFragment = true; return f; },
};
eval(code);
const g = byId.graph;
const report = { title: byId.title.textContent, boxes: g.children.map((c) => c.textContent) };
const leakA = g.children.find((c) => c.textContent === "leak_a");
g.listeners.mousemove({ target: leakA, clientX: 10, clientY: 10 });
report.tip = byId.tip.textContent;
g.listeners.click({ target: leakA });
report.zoomed = g.children.map((c) => [c.textContent, c.style.width, c.className]);
byId.search.value = "malloc";
byId.search.listeners.input();
report.status = byId.status.textContent;
report.hits = g.children.filter((c) => c.className.includes("hit")).map((c) => c.textContent);
byId.search.value = "[";
byId.search.listeners.input();
report.badRegexStatus = byId.status.textContent;
byId.reset.listeners.click();
report.reset = g.children.length;
console.log(JSON.stringify(report));
"""


def test_page_script_runs(tmp_path):
    node = shutil.which("node") or shutil.which("nodejs")
    if node is None:
        pytest.skip("node not installed: the page script is only checked in a JS engine")
    path = tmp_path / "fg.html"
    write_html(path, FOLDED, title="memleak", count_name="bytes")
    stub = tmp_path / "stub.js"
    stub.write_text(DOM_STUB)
    proc = subprocess.run([node, str(stub), str(path)], capture_output=True, text=True,
                          timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["title"] == "memleak"
    # "other" holds 7 of 23,864 bytes, under the 0.05% below which frames are not drawn.
    assert sorted(report["boxes"]) == sorted(
        ["all", "leaker", "main", "leak_a", "leak_b", "malloc", "malloc"])
    total = sum(FOLDED.values())
    assert report["tip"] == f"leak_a (23,552 bytes, {100 * 23552 / total:.2f}%)"
    # Zoomed on leak_a: its ancestors span the width, dimmed; leak_a and below are drawn.
    zoomed = {name: (width, cls) for name, width, cls in report["zoomed"]}
    assert set(zoomed) == {"all", "leaker", "main", "leak_a", "malloc"}
    assert zoomed["main"] == ("100%", "f dim") and zoomed["leak_a"] == ("100%", "f")
    assert report["status"] == f"Matched: 23,852 bytes ({100 * 23852 / total:.2f}%)"
    assert report["hits"] == ["malloc"]
    assert report["reset"] == len(report["boxes"])
    # Not a valid regex: searched as literal text, finding "[missed user stack]".
    assert report["badRegexStatus"] == f"Matched: 7 bytes ({100 * 7 / total:.2f}%)"
