"""The server-side SVG renderer: well-formed, escaped, accessible, and every mark inside the plot area."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

from recommendations.admin import charts

NS = {"svg": "http://www.w3.org/2000/svg"}
LABELS = ["May 1", "May 2", "May 3", "May 4", "May 5"]


def parse(svg: str) -> ET.Element:
    root = ET.fromstring(svg)  # raises on anything that is not well-formed XML
    assert root.tag == "{http://www.w3.org/2000/svg}svg"
    return root


def plot_area(root: ET.Element) -> tuple[float, float, float, float]:
    rect = root.find("svg:rect[@class='plot-area']", NS)
    x, y = float(rect.get("x")), float(rect.get("y"))
    return x, y, x + float(rect.get("width")), y + float(rect.get("height"))


def circles(root: ET.Element) -> list[tuple[float, float, str]]:
    return [
        (float(c.get("cx")), float(c.get("cy")), c.find("svg:title", NS).text) for c in root.iterfind("svg:circle", NS)
    ]


def texts(root: ET.Element) -> list[str]:
    return [t.text or "" for t in root.iter("{http://www.w3.org/2000/svg}text")]


def test_a_line_chart_is_an_accessible_image_with_a_legend_and_tooltips():
    svg = charts.line_chart(
        {"for_you": [1, 2, 3, 4, 5], "similar": [5, 4, 3, 2, 1]}, LABELS, title="CTR", y_label="ctr"
    )
    root = parse(svg)
    assert root.get("role") == "img" and root.get("aria-label") == "CTR"
    assert root.find("svg:title", NS).text == "CTR"
    assert "for_you, similar" in root.find("svg:desc", NS).text
    assert {"for_you", "similar", "CTR", "ctr", "May 1", "May 5"} <= set(texts(root))
    lines = root.findall("svg:polyline", NS)
    assert len(lines) == 2 and lines[0].get("stroke") != lines[1].get("stroke"), "a colour per series"
    tips = [tip for _, _, tip in circles(root)]
    assert len(tips) == 10 and "for_you · May 3: 3" in tips and "similar · May 1: 5" in tips


def test_points_scale_into_the_plot_area():
    values = [0.0, 12.5, 3.0, 40.0, 7.0]
    root = parse(charts.line_chart({"a": values}, LABELS, title="t"))
    left, top, right, bottom = plot_area(root)
    points = circles(root)
    assert all(left < x < right and top <= y <= bottom for x, y, _ in points)
    xs, ys = [x for x, _, _ in points], [y for _, y, _ in points]
    assert xs == sorted(xs), "left to right in x order"
    assert ys[0] == pytest.approx(bottom), "zero sits on the x axis"
    assert min(ys) == ys[3] and ys[3] >= top, "the largest value is the highest point, still inside"
    # y is linear in the value: equal steps of value are equal steps of height.
    per_unit = (ys[0] - ys[1]) / 12.5
    assert (ys[0] - ys[3]) / 40.0 == pytest.approx(per_unit, rel=1e-2)


def test_none_is_a_gap_and_a_lone_point_is_a_dot():
    root = parse(charts.line_chart({"a": [1, 2, None, 4, 5], "b": [1, None, 3, None, None]}, LABELS, title="gaps"))
    lines = root.findall("svg:polyline", NS)
    assert [len(line.get("points").split()) for line in lines] == [2, 2], "a's two runs; b has no run of two"
    tips = [tip for _, _, tip in circles(root)]
    assert len(tips) == 6 and "b · May 3: 3" in tips and not any("May 3" in t for t in tips if t.startswith("a "))


def test_names_and_labels_are_escaped():
    name = '<script>alert("x")</script> & co'
    svg = charts.line_chart({name: [1, 2]}, ["<b>1</b>", "2"], title="A & <B>", y_label="<i>")
    assert "<script>" not in svg and "<b>" not in svg and "<i>" not in svg
    root = parse(svg)
    assert root.get("aria-label") == "A & <B>"
    assert name in texts(root) and "<b>1</b>" in texts(root)
    assert f"{name} · <b>1</b>: 1" in [tip for _, _, tip in circles(root)]


@pytest.mark.parametrize(
    ("series", "labels"), [({}, []), ({"a": []}, []), ({"a": [None, None]}, ["x", "y"]), ({}, LABELS)]
)
def test_empty_data_is_a_valid_chart_that_says_so(series, labels):
    for chart in (charts.line_chart, charts.bar_chart):
        root = parse(chart(series, labels, title="empty"))
        assert "No data for this period" in texts(root)
        assert not root.findall("svg:circle", NS) and not root.findall("svg:polyline", NS)


def test_stacked_bars_add_up_and_stay_inside():
    root = parse(charts.bar_chart({"a": [1, 2, 0], "b": [3, None, 1]}, ["x", "y", "z"], title="bars"))
    left, top, right, bottom = plot_area(root)
    bars = [r for r in root.iterfind("svg:rect", NS) if r.find("svg:title", NS) is not None]
    assert len(bars) == 4, "zero and None draw no bar"
    heights = {r.find("svg:title", NS).text: float(r.get("height")) for r in bars}
    assert heights["b · x: 3"] == pytest.approx(3 * heights["a · x: 1"], rel=1e-2)
    for r in bars:
        x, y, w, h = (float(r.get(k)) for k in ("x", "y", "width", "height"))
        assert left <= x and x + w <= right and top - 0.5 <= y and y + h <= bottom + 0.5
    # Stacked: b sits on a in the first column.
    a, b = (next(r for r in bars if r.find("svg:title", NS).text == t) for t in ("a · x: 1", "b · x: 3"))
    assert float(b.get("y")) + float(b.get("height")) == pytest.approx(float(a.get("y")), abs=0.2)


def test_grouped_bars_sit_side_by_side():
    root = parse(charts.bar_chart({"a": [2], "b": [2]}, ["x"], title="g", stacked=False))
    a, b = root.findall("svg:rect[@fill]", NS)[-2:]
    assert a.get("y") == b.get("y") and float(a.get("x")) < float(b.get("x"))


def test_a_long_legend_wraps_and_many_labels_thin_out():
    names = {f"placement number {i}": [float(i)] * 60 for i in range(9)}
    labels = [f"day {i}" for i in range(60)]
    root = parse(charts.line_chart(names, labels, title="many", width=500))
    legend_ys = {t.get("y") for t in root.iter("{http://www.w3.org/2000/svg}text") if t.text in names}
    assert len(legend_ys) > 1, "the legend wraps onto more rows"
    assert sum(1 for t in texts(root) if t.startswith("day ")) <= charts.MAX_X_LABELS
    _, _, _, bottom = plot_area(root)
    assert all(float(y) > bottom for y in legend_ys), "the legend sits below the plot"


def test_formats_and_ticks():
    assert charts.percent(0.0312) == "3.1%" and charts.percent(1) == "100%"
    assert [charts.number(v) for v in (0, 12, 0.25, 1250.4, 0.031234)] == ["0", "12", "0.25", "1,250", "0.0312"]
    assert charts.nice_ticks(0, 7) == [0, 2, 4, 6, 8]
    assert charts.nice_ticks(0, 0.034) == [0, 0.01, 0.02, 0.03, 0.04]
    assert charts.nice_ticks(0, 0) == [0, 0.2, 0.4, 0.6, 0.8, 1], "a flat zero line still gets an axis"
    root = parse(charts.line_chart({"ctr": [0.01, 0.034]}, ["a", "b"], title="t", y_format=charts.percent))
    assert "4%" in texts(root) and "ctr · b: 3.4%" in [tip for _, _, tip in circles(root)]
