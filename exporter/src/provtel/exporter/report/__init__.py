"""Reading a run: the end-of-run summary, ``provtel report``, ``provtel diff``, ``provtel export``
and ``provtel graph``.

Everything here reads documents only (``prov.json`` and the series files beside it): a run
folder, a merged job folder or a folder written by ``provtel serve``. The text and JSON reports
need nothing beyond provtel-exporter; the HTML report (matplotlib charts as inline SVG in a
jinja2 template, one self-contained file) needs ``provtel-exporter[report]``.
"""
