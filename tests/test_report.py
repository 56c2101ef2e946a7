"""`trebuchet report`: the tables and JSON of a tiny model are consistent (sums, classes,
exact matmul FLOPs, every compiled kernel once), the counting conventions, and the HTML
page as headless Chromium renders it."""
from __future__ import annotations

import json
import os
import pathlib
import re
import shutil
import subprocess

import pytest
import torch

import trebuchet
from trebuchet.report import counting, html, run, text, write, zoo
from trebuchet.report.classes import CLASSES, classify_kernel, classify_op


@pytest.fixture(scope="module")
def bert_report() -> dict:
    trebuchet.reset()
    model = zoo.build("bert", zoo.Sizes(batch=1, seq=16, layers=1))
    data = run.measure(model, rounds=3, profile_runs=3)
    return json.loads(json.dumps(data, default=str))   # what the JSON file holds


def test_class_columns_sum_to_100(bert_report: dict) -> None:
    for side in ("eager", "trebuchet"):
        table = bert_report["classes"][side]
        for key in ("flops", "bytes", "ns"):
            assert sum(table[c][f"{key}_pct"] for c in CLASSES) == pytest.approx(100.0)
            assert sum(table[c][key] for c in CLASSES) == pytest.approx(table["total"][key])
    eager = bert_report["classes"]["eager"]
    # a BERT layer: contractions, normalization and element-wise work all present;
    # contractions hold most FLOPs, yet the other classes take time
    for cls in ("contraction", "normalization", "element-wise"):
        assert eager[cls]["ns"] > 0 and eager[cls]["flops"] > 0
    assert eager["contraction"]["flops_pct"] > 90
    assert eager["contraction"]["ns_pct"] < 100


def test_every_kernel_once_and_totals_add_up(bert_report: dict) -> None:
    rows = bert_report["kernels"]
    keys = [(k["graph"], k["name"]) for k in rows]
    assert len(keys) == len(set(keys))
    generated = [k for k in rows if k["kind"] != "extern"]
    assert len(generated) == bert_report["compile"]["kernels"] > 0
    assert {k["cls"] for k in rows if k["kind"] == "extern"} == {"contraction"}
    tot = bert_report["totals"]
    assert sum(k["ns"] for k in rows) == pytest.approx(tot["compiled_step_ns"])
    assert 0 < tot["compiled_step_ns"] <= tot["compiled_graph_ns"] <= tot["compiled_wall_ns"]
    assert tot["margin_pct"] == pytest.approx(
        100 * (tot["compiled_graph_ns"] - tot["compiled_step_ns"]) / tot["compiled_graph_ns"])
    assert sum(k["ns"] for k in rows) == pytest.approx(bert_report["classes"]["trebuchet"]["total"]["ns"])
    assert 0 < tot["eager_op_ns"] <= tot["eager_wall_ns"]
    for k in rows:
        assert k["bytes"] > 0 and k["calls"] >= 1 and k["bound"] in ("memory", "compute")
        assert k["gbps"] == pytest.approx(k["bytes"] / k["ns"])
        assert k["bytes_written"] > 0 and k["bytes_read"] > 0
    assert bert_report["timing"]["max_abs_diff"] < 1e-4


def test_text_report_shows_tables(bert_report: dict) -> None:
    out = text.render(bert_report)
    for needle in ("tensor contraction", "normalization", "element-wise", "data movement",
                   "speedup", "margin", "fusion removed", "% copy", "FLOP/B", "kernel0"):
        assert needle in out, needle


class _Linear(torch.nn.Module):
    def __init__(self, k: int, n: int) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.randn(n, k))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x @ self.w.t())


def test_known_matmul_flops_exact() -> None:
    m, k, n = 48, 40, 24
    module = _Linear(k, n).eval()
    model = zoo.Model("linear", "linear", module, (torch.randn(m, k),), {})
    data = run.measure(model, rounds=3, profile_runs=3)
    mm = [o for o in data["eager_ops"] if o["name"] == "mm"]
    assert len(mm) == 1 and mm[0]["flops"] == 2 * m * n * k
    assert data["classes"]["eager"]["contraction"]["flops"] == 2 * m * n * k
    externs = [r for r in data["kernels"] if r["kind"] == "extern"]
    assert [r["flops"] for r in externs] == [2 * m * n * k]
    assert data["classes"]["trebuchet"]["contraction"]["flops"] == 2 * m * n * k
    # the relu: one FLOP per output element in eager (max(x, 0) in the kernel)
    assert data["classes"]["eager"]["element-wise"]["flops"] == m * n
    # bytes: the matmul reads x and w and writes the product
    assert mm[0]["bytes"] == 4 * (m * k + n * k + m * n)
    assert externs[0]["bytes"] == 4 * (m * k + n * k + m * n)
    assert externs[0]["bytes_written"] == 4 * m * n


def test_counting_conventions() -> None:
    assert counting.op_flops("aten::bmm", [(3, 4, 5), (3, 5, 6)], [(3, 4, 6)]) == (2 * 3 * 4 * 5 * 6, 0)
    assert counting.op_flops("aten::addmm", [(6,), (4, 5), (5, 6)], [(4, 6)]) == (2 * 4 * 5 * 6 + 24, 0)
    conv = counting.op_flops("aten::convolution", [(1, 3, 8, 8), (16, 3, 3, 3)], [(1, 16, 6, 6)])
    assert conv == (2 * 16 * 36 * 27, 0)
    assert counting.op_flops("aten::exp", [(10,)], [(10,)]) == (10, 10)
    assert counting.op_flops("aten::add", [(10,), (10,)], [(10,)]) == (10, 0)
    assert counting.op_flops("aten::view", [(10,)], [(2, 5)]) == (0, 0)
    x = torch.randn(4, 1).expand(4, 8)
    assert counting.unique_bytes(x.shape, x.stride(), 4) == 16


def test_classes() -> None:
    assert classify_op("aten::addmm") == classify_op(torch.ops.aten.bmm.default) == "contraction"
    assert classify_op("aten::native_layer_norm") == "normalization"
    assert classify_op("aten::_softmax") == "normalization"
    assert classify_op("aten::gelu") == classify_op("aten.add.Tensor") == "element-wise"
    assert classify_op("aten::index_select") == classify_op("aten::cat") == "data movement"
    assert classify_op("aten::empty") == "other"
    assert classify_kernel("row", ["aten.add.Tensor"]) == "normalization"
    assert classify_kernel("pointwise", ["aten.cat.default"]) == "data movement"
    assert classify_kernel("pointwise", ["aten.cat.default", "aten.mul.Tensor"]) == "element-wise"


def test_zoo_names_and_errors() -> None:
    with pytest.raises(zoo.ModelError, match="unknown model 'nope'"):
        zoo.build("nope", zoo.Sizes())
    with pytest.raises(zoo.ModelError, match="cannot import"):
        zoo.build("no_such_module_xyz:make", zoo.Sizes())
    for name in zoo.NAMES:
        m = zoo.build(name, zoo.Sizes(batch=1, seq=4, layers=1))
        with torch.no_grad():
            m()


# ---- the HTML page in headless Chromium ----

def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return shutil.which(name)
    return None


# runs as the last thing in <body>: everything above is parsed, and getBoundingClientRect
# lays the page out
_PROBE = """<script>
(() => {
  // matplotlib writes each marker as a <use> of a shape in <defs>, or (few points) a <path>
  const marks = id => `#${id} > use, #${id} > path, #${id} > g > use, #${id} > g > path`;
  const visible = sel => [...document.querySelectorAll(sel)].filter(e => {
    const r = e.getBoundingClientRect(); return r.width > 0 && r.height > 0; }).length;
  document.title = 'PROBE ' + JSON.stringify({
    kernels: visible(marks('roofline-kernels')), library: visible(marks('roofline-library')),
    bars: visible('#bars [id^="bar-"]'), svgs: document.querySelectorAll('svg').length});
})();
</script>"""


def test_html_page_renders_in_chromium(bert_report: dict, tmp_path: pathlib.Path) -> None:
    browser = _chromium()
    if browser is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is missing in CI: .ci/run installs it (apt-get install chromium)")
        pytest.skip("headless Chromium not installed (Debian: apt-get install chromium); "
                    ".ci/run installs it")
    pytest.importorskip("matplotlib")
    paths = write(bert_report, tmp_path, "bert")
    page = paths[1].read_text()
    # self-contained: nothing fetched (XML namespaces are names, not fetches)
    assert not re.search(r'(src|href|url)\s*[=(]\s*["\']?(https?:|//)', page)
    probe = tmp_path / "probe.html"
    probe.write_text(page.replace("</body>", _PROBE + "</body>"))
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--window-size=1300,1500",
             f"--user-data-dir={tmp_path / 'profile'}"]
    dom = subprocess.run([browser, *flags, "--dump-dom", probe.as_uri()], capture_output=True,
                         text=True, timeout=120).stdout
    start = dom.index("PROBE ") + len("PROBE ")
    seen = json.loads(html.unescape_title(dom[start:dom.index("</title>", start)]))
    kernels = [k for k in bert_report["kernels"] if k["kind"] != "extern"]
    library = [k for k in bert_report["kernels"] if k["kind"] == "extern"]
    assert seen["svgs"] == 2                            # the roofline and the bars, inline
    assert seen["kernels"] == len(kernels) and seen["library"] == len(library)
    # one bar segment per (eager/trebuchet, FLOPs/bytes/time, class) with a share
    # above 0 (bars of no share are not drawn)
    segments = sum(1 for side in ("eager", "trebuchet") for key in ("flops", "bytes", "ns")
                   for c in CLASSES if bert_report["classes"][side][c][f"{key}_pct"] > 0)
    assert seen["bars"] == segments >= 8
    shot = tmp_path / "shot.png"
    subprocess.run([browser, *flags, f"--screenshot={shot}", paths[1].as_uri()], capture_output=True,
                   timeout=120)
    import matplotlib.image

    img = matplotlib.image.imread(shot)
    assert img.shape[0] >= 1000 and img.shape[1] >= 1000
    flat = img[..., :3].reshape(-1, 3)
    assert flat.std() > 0.05                            # not a blank page
    assert len({tuple(p) for p in (flat[::97] * 255).astype(int).tolist()}) > 20   # charts' colours
