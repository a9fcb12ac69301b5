"""Reports of the paper's diagnostic studies from their MLflow runs: one self-contained
HTML page with each study's table in the paper's layout (measured beside the paper's
numbers), Figure 1-style first / last layer bars, per-layer AP and gap curves, training
curves, the definitions and the run configuration.

Modules: :mod:`~dimaskdino.reports.runs` (reading the store), ``definitions`` (layouts,
paper columns, switch definitions), ``tables``, ``figures``, ``drawing`` (pictures of
detections, shared with ``dimask visualize``), ``gallery`` (the pictures of each study),
``html`` (the template) and ``build`` (:func:`write_report`).
"""

from dimaskdino.reports.build import write_report
from dimaskdino.reports.runs import ReportError

__all__ = ["ReportError", "write_report"]
