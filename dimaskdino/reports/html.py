"""The report page: one self-contained HTML file (inline CSS, figures as base64 PNG) from a
jinja2 template. A small inline script records on ``<body>`` how many images loaded
(``data-images-loaded`` of ``data-images``) and how many tables there are
(``data-tables``), for headless-browser checks."""

from __future__ import annotations

import base64
import html
import re

import jinja2
from markupsafe import Markup

TEMPLATE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{{ title }}</title>
<style>
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 0 auto;
       max-width: 1200px; padding: 1.5rem 2rem; color: #222; line-height: 1.45; }
h1 { margin-bottom: .2rem; } h2 { border-bottom: 2px solid #ddd; padding-bottom: .2rem;
     margin-top: 2.5rem; } h3 { margin-top: 1.6rem; }
.meta { color: #555; font-size: .92rem; } code { background: #f3f3f3; padding: 0 .2rem; }
table { border-collapse: collapse; margin: .6rem 0 1rem; font-size: .88rem; }
th, td { border: 1px solid #d4d4d4; padding: .25rem .55rem; text-align: right; }
th { background: #f5f6f8; } td.left, th.left { text-align: left; }
caption { caption-side: top; text-align: left; font-weight: 600; padding: .3rem 0; }
figure { margin: 1rem 0 1.6rem; } figure img { max-width: 100%; border: 1px solid #eee; }
figcaption { color: #555; font-size: .88rem; }
.note { background: #fff8e1; border-left: 4px solid #f2c14e; padding: .4rem .8rem; }
details { margin: .5rem 0; } summary { cursor: pointer; color: #225; }
nav ul { columns: 2; }
</style>
</head>
<body>
<h1>{{ title }}</h1>
<p class="meta">Generated {{ generated }} from <code>{{ tracking_uri }}</code>.
Files beside this page: <code>{{ assets }}/</code> (figures as PNG and SVG, tables as CSV
and LaTeX).</p>
<h2 id="claims">Claims</h2>
<p>The paper's claims that these runs can test: the measured effect (mean over seeds, paired
by seed) with its 95% t-interval over seeds and a verdict. Rule: {{ claims_rule }}.</p>
{{ claims_html }}
{% if untested %}<p class="meta">Not tested (no runs of the cells they need):
{{ untested | join("; ") }}.</p>{% endif %}
<nav><ul>
<li><a href="#claims">Claims</a></li>
<li><a href="#environment">Environment</a></li>
{% if figure_one %}<li><a href="#figure-1">Figure 1</a></li>{% endif %}
{% for s in sections %}<li><a href="#{{ s.key }}">{{ s.table }}: {{ s.name }}
({{ s.scale }}, {{ s.dataset }})</a></li>{% endfor %}
<li><a href="#definitions">Definitions</a></li>
<li><a href="#configuration">Run configuration</a></li>
</ul></nav>

<h2 id="environment">Environment</h2>
<table class="versions"><tr>{% for name, version in versions %}<th>{{ name }}</th>
{% endfor %}</tr><tr>{% for name, version in versions %}<td>{{ version }}</td>
{% endfor %}</tr></table>
<table class="runs"><tr><th class="left">study</th><th>table</th><th class="left">dataset</th>
<th class="left">scale</th><th class="left">backbone start</th><th>seeds</th><th>runs</th></tr>
{% for s in sections %}<tr><td class="left">{{ s.name }}</td><td>{{ s.table }}</td>
<td class="left"><code>{{ s.dataset }}</code></td><td class="left">{{ s.scale }}</td>
<td class="left">{{ s.start }}</td><td>{{ s.seeds_run }}</td><td>{{ s.runs }}</td></tr>
{% endfor %}</table>

{% if figure_one %}<h2 id="figure-1">Figure 1: the imbalance at the first layer</h2>
{{ chart(figure_one) }}{% endif %}
{% if tide %}{{ chart(tide) }}{% endif %}

{% for s in sections %}
<h2 id="{{ s.key }}">{{ s.table }}: {{ s.name }}</h2>
<p>{{ s.description }}. Dataset <code>{{ s.dataset }}</code>, scale <b>{{ s.scale }}</b>,
seeds {{ s.seeds }} ({{ s.runs }} finished runs). Measured: final AP of each run, mean ± std
over seeds; Δ = measured &minus; paper.</p>
{% if not s.matched %}<p class="note">The paper column holds the paper's
{{ s.paper_dataset }} numbers as a reference only: the {{ s.scale }} scale on
<code>{{ s.dataset }}</code> is not expected to match them.</p>{% endif %}
{{ s.table_html }}
<details open><summary>{{ s.table }} in the paper's full layout (every dataset it ran on;
measured beside the dataset of these runs, or beside each as a reference only)</summary>
{{ s.full_layout_html }}</details>
<details><summary>cells of {{ s.name }} (the paper-scale overrides of the registry)</summary>
<table><tr><th class="left">cell</th><th class="left">model</th><th class="left">overrides</th>
<th>seeds run</th></tr>{% for c in s.cells %}<tr><td class="left">{{ c.name }}</td>
<td class="left">{{ c.model }}</td><td class="left">{% for o in c.overrides %}<code>{{ o }}</code>
{% else %}(paper defaults){% endfor %}</td><td>{{ c.seeds }}</td></tr>{% endfor %}</table>
</details>
{% for c in s.charts %}{{ chart(c) }}{% endfor %}
{% if s.gallery %}<h3 id="{{ s.key }}-pictures">Pictures: the first and the last layer</h3>
{{ chart(s.gallery) }}{% endif %}
{% if s.over_training %}<h3 id="{{ s.key }}-over-training">Imbalance over training</h3>
<p>The layer probe during training (<code>solver.probe_period</code>): how the first-layer
imbalance forms. The paper (§1) explains it in part by "the optimization speeds of the two
tasks": dense mask supervision teaching segmentation faster than sparse box supervision
teaches detection. If so, the first layer's AP mask reaches half its final value before its
AP box does.</p>
{% for c in s.over_training.charts %}{{ chart(c) }}{% endfor %}
<p>First layer, iterations from AP mask to AP box reaching 50% of their final values
(positive: detection learns slower), mean over seeds:
{% for cell, mean, std, n in s.over_training.gaps %}<b>{{ cell }}</b>
{% if n == 0 %}not reached{% elif n == 1 %}{{ "%+.0f" | format(mean) }} (one seed){% else %}
{{ "%+.0f" | format(mean) }} ± {{ "%.0f" | format(std) }} ({{ n }} seeds){% endif %}
{{- "; " if not loop.last }}{% endfor %}.</p>
<p>Learning speed per layer and task (mean over seeds): the first probed iteration at which
AP reaches 50% and 90% of its final value, and the area under the AP curve over the probed
iterations divided by the final AP and the span (1: the final AP from the first probe on;
smaller: learned later). Task <code>mask-box</code>: the box AP of each detection's mask's
tight box. File: <code>{{ s.key }}-learning-speed.csv</code>.</p>
{{ s.over_training.speed_html }}{% endif %}
{% endfor %}

<h2 id="definitions">Definitions</h2>
<h3>Studies</h3>
<table><tr><th class="left">study</th><th>table</th><th class="left">description</th></tr>
{% for name, table, description in studies %}<tr><td class="left">{{ name }}</td>
<td>{{ table }}</td><td class="left">{{ description }}</td></tr>{% endfor %}</table>
<h3>Cells and switches</h3>
<p>{{ overview | markup }}</p>
<dl>{% for term, tables, text in switches %}<dt><b>{{ term }}</b> ({{ tables }})</dt>
<dd>{{ text | markup }}</dd>{% endfor %}</dl>

<h2 id="configuration">Run configuration</h2>
{% for s in sections %}<h3>{{ s.name }} ({{ s.scale }}, {{ s.dataset }})</h3>
<p>What differs between the runs:</p>{{ s.varying_html }}
<details><summary>the {{ s.shared | length }} settings shared by every run</summary>
<table>{% for key, value in s.shared %}<tr><td class="left"><code>{{ key }}</code></td>
<td class="left"><code>{{ value }}</code></td></tr>{% endfor %}</table></details>
{% endfor %}
<script>
window.addEventListener("load", function () {
  var images = Array.from(document.images);
  var loaded = images.filter(function (i) { return i.complete && i.naturalWidth > 0; });
  document.body.setAttribute("data-images", images.length);
  document.body.setAttribute("data-images-loaded", loaded.length);
  document.body.setAttribute("data-tables", document.querySelectorAll("table").length);
});
</script>
</body>
</html>
"""

CHART = """<figure id="{{ c.stem }}">
<img alt="{{ c.title }}" src="data:image/png;base64,{{ data }}">
<figcaption><b>{{ c.title }}.</b> {{ c.caption }} Files:
<code>{{ assets }}/{{ c.stem }}.png</code>, <code>{{ assets }}/{{ c.stem }}.svg</code>.
</figcaption></figure>"""


def markup(text: str) -> str:
    """RST-ish docstring text as HTML: escaped; ````code```` and roles such as
    ``:mod:`name``` as ``<code>``."""
    escaped = html.escape(text, quote=False)
    return re.sub(r"``(.+?)``|:\w+:`([^`]+)`", lambda m: f"<code>{m[1] or m[2]}</code>",
                  escaped)


def render(context: dict) -> str:
    """The page for ``context`` (the template's variables; charts are
    :class:`~dimaskdino.reports.figures.Chart` objects, tables :class:`Markup`)."""
    environment = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined)
    environment.filters["markup"] = lambda text: Markup(markup(text))
    chart = environment.from_string(CHART)

    def render_chart(c) -> Markup:
        data = base64.b64encode(c.png).decode("ascii")
        return Markup(
            chart.render(c=c, data=data, assets=context["assets"]))

    page = environment.from_string(TEMPLATE)
    return page.render(chart=render_chart, **context)
