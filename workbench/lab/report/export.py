"""Run the report notebook with papermill and export it to one self-contained, offline HTML file.

Plotly charts need `plotly.io.renderers.default = "plotly_mimetype+notebook"` in the notebook:
the `notebook` part embeds plotly.js once and each figure as HTML that nbconvert keeps. What the
export removes so the page opens offline without errors: nbconvert's CDN scripts (require.js,
MathJax, mermaid) and the MathJax CDN tag plotly adds to every figure. Random plot div ids and
papermill's random cell id are replaced by fixed ones, so the same sweep exports the same HTML.
Many pages side by side (a sweep's point notebooks) can load one shared plotly.js file instead.
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path
from typing import Any

import jinja2
import nbformat

from workbench.core import files
from workbench.lab.report.sweep_tables import Sweep, load_sweep, sweep_methods
from workbench.lab.shipped import shipped

REPORT_NOTEBOOK = shipped("notebooks/report.ipynb")
KERNEL = "python3"
REPORT_PARAMETERS = ("reference", "rival", "target_fraction", "target_accuracy")  # besides sweep_dir
METHOD_PARAMETERS = ("reference", "rival")  # name a method of the sweep
REMOTE_SCRIPT = re.compile(r"<script[^>]*\bsrc=[\"']https?://[^\"']*[\"'][^>]*>\s*</script>")
PLOTLY_LIBRARY = re.compile(r"<script[^>]*>\s*(/\*\*\s*\* plotly\.js v.*?)</script>", re.DOTALL)
DIV_ID = re.compile(r'<div id="([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})"')
# nbconvert's lab template minus the blocks that load scripts from CDNs.
OFFLINE_TEMPLATE = """{%- extends 'index.html.j2' -%}
{%- block html_head_js_requirejs -%}{%- endblock html_head_js_requirejs -%}
{%- block html_head_js_mathjax -%}{%- endblock html_head_js_mathjax -%}
{%- block html_head_js_mermaidjs -%}{%- endblock html_head_js_mermaidjs -%}
"""


def check_kernel(kernel_name: str = KERNEL) -> None:
    """Fail unless `kernel_name` starts this interpreter (so the notebook sees this environment)."""
    from jupyter_client.kernelspec import KernelSpecManager

    argv0 = KernelSpecManager().get_kernel_spec(kernel_name).argv[0]
    same = {"python", f"python{sys.version_info[0]}", "python{}.{}".format(*sys.version_info[:2])}
    # jupyter_client swaps a bare "python…" for sys.executable when it launches the kernel.
    if argv0 not in same and Path(argv0).resolve() != Path(sys.executable).resolve():
        raise RuntimeError(
            f"kernel {kernel_name!r} would run {argv0}, not {sys.executable}; register this "
            f"environment's kernel: {sys.executable} -m ipykernel install --sys-prefix"
        )


def execute_notebook(template: Path, output: Path, parameters: dict[str, Any], timeout: int = 600) -> Path:
    """Run `template` with papermill in this environment's python3 kernel; write `output`."""
    import tempfile

    import papermill
    from jupyter_core.utils import run_sync

    from workbench.lab.ipc_kernels import ipc_kernel_manager

    check_kernel(KERNEL)
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    with (
        tempfile.TemporaryDirectory(prefix="workbench-kernel-") as sockets,
        files.replacing(output, keep_on_error=True) as partial,  # readers never see half of it
    ):
        km = ipc_kernel_manager(sockets, KERNEL)
        try:
            papermill.execute_notebook(
                str(template),
                str(partial),
                parameters=parameters,
                kernel_name=KERNEL,
                language="python",
                execution_timeout=timeout,
                progress_bar=False,
                cwd=str(output.parent),
                km=km,
            )
        finally:  # nbclient leaves a kernel it was handed running
            if km.has_kernel:
                run_sync(km.shutdown_kernel)(now=True)
    return output


def _share_library(text: str, library: Path, page: Path) -> str:
    """Move an embedded plotly.js into `library` (written once) and load it from there."""
    match = PLOTLY_LIBRARY.search(text)
    if match is None:
        return text
    if not library.is_file() or library.read_text(encoding="utf-8") != match.group(1):
        files.write_text(library, match.group(1))
    src = Path(os.path.relpath(library.resolve(), page.resolve().parent)).as_posix()
    return text[: match.start()] + f'<script src="{src}"></script>' + text[match.end() :]


def _offline_outputs(
    nb: nbformat.NotebookNode, library: Path | None = None, page: Path | None = None
) -> None:
    """Drop CDN script tags from HTML outputs; replace random div and cell ids; with `library`,
    load plotly.js from that shared file instead of embedding it; in place."""
    count = 0
    for cell in nb.cells:
        if "injected-parameters" in cell.metadata.get("tags", []):
            cell["id"] = "injected-parameters"  # papermill gives it a random id
        for out in cell.get("outputs", []):
            html = out.get("data", {}).get("text/html")
            if html is None:
                continue
            text = REMOTE_SCRIPT.sub("", html if isinstance(html, str) else "".join(html))
            if library is not None and page is not None:
                text = _share_library(text, library, page)
            for div_id in DIV_ID.findall(text):
                count += 1
                text = text.replace(div_id, f"plot-{count}")
            out["data"]["text/html"] = text


def notebook_to_html(
    notebook: Path, html: Path, hide_code: bool = True, shared_plotlyjs: Path | None = None
) -> Path:
    """Export an executed notebook to offline HTML (code hidden unless hide_code=False).

    plotly.js is embedded once in the page, or with `shared_plotlyjs` written to that file and
    loaded from it by a relative path (for many pages side by side, e.g. a sweep's points).
    """
    from nbconvert import HTMLExporter

    nb = nbformat.read(str(notebook), as_version=4)
    _offline_outputs(nb, shared_plotlyjs, Path(html))
    exporter = HTMLExporter(
        template_name="lab",
        template_file="workbench_offline.html.j2",
        extra_loaders=[jinja2.DictLoader({"workbench_offline.html.j2": OFFLINE_TEMPLATE})],
        exclude_input=hide_code,
        exclude_input_prompt=hide_code,
        exclude_output_prompt=hide_code,
        sanitize_html=False,
    )
    body, _ = exporter.from_notebook_node(nb, resources={"metadata": {"name": Path(html).stem}})
    html = Path(html)
    files.write_text(html, body)
    return html


def check_methods(sweep: Sweep, parameters: dict[str, Any]) -> None:
    """Refuse a `reference` or `rival` given explicitly that names no method of the sweep (the
    defaults may be absent: the report then says so)."""
    given = {k: parameters[k] for k in METHOD_PARAMETERS if k in parameters}
    methods = sweep_methods(sweep) if given else []
    for key, value in given.items():
        if value not in methods:
            raise ValueError(
                f"report parameter {key}={value!r} is no method of this sweep; its methods: {methods}"
            )


def build_report(sweep_dir: Path, timeout: int = 600, **parameters: Any) -> Path:
    """Execute notebooks/report.ipynb on a sweep into SWEEP/report.ipynb and SWEEP/report.html.

    `parameters` go to the report's parameters cell, e.g. target_fraction=0.8 or reference="fd"
    (the method the verdict is about; `rival` the one it is also compared with).
    """
    sweep_dir = Path(sweep_dir).resolve()
    if not (sweep_dir / "sweep.json").is_file():
        raise FileNotFoundError(f"{sweep_dir} is not a sweep folder (no sweep.json)")
    unknown = sorted(set(parameters) - set(REPORT_PARAMETERS))
    if unknown:
        raise ValueError(f"unknown report parameter(s) {unknown}; allowed: {list(REPORT_PARAMETERS)}")
    sweep = load_sweep(sweep_dir)  # a damaged sweep.json or results.csv is named here, not in the kernel
    check_methods(sweep, parameters)
    executed = execute_notebook(
        REPORT_NOTEBOOK,
        sweep_dir / "report.ipynb",
        {"sweep_dir": str(sweep_dir), **parameters},
        timeout=timeout,
    )
    return notebook_to_html(executed, sweep_dir / "report.html", hide_code=True)
