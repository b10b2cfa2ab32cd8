"""Metrics: what a sweep measures of the network on each test example — the response β of Sec. 4.2 that Eq. 11–16
scale and integrate — as small classes on one base.

A metric is a per-example function of the logits and the labels, ``values(logits, labels) -> (batch,)``, and the
response is its mean over the test examples: β_{h,i} = (1/n) Σ_j m(f(x_j, θ̃_{h,i}), y_j) on clean inputs and
β_{ε,h,i} the same on adversarial ones. A mean of per-example values combines batches exactly, and the per-example
values are stored for the bootstrap intervals over test images (`fragility.uncertainty`). Built in: `Accuracy`
(top-1, the paper, the default), `TopK(k)` (the label among the k largest logits, ties broken toward the lower
class index as ``argmax`` breaks them, so that ``TopK(1)`` equals `Accuracy` exactly) and `FunctionMetric`, a
function of one's own, made by ``fr.metric(fn, name=..., higher_is_better=...)``. Adding a kind is one class: a
frozen dataclass subclass of `Metric` decorated with `register_metric(name)`.

Where the results keep it: the default metric keeps the names of the paper's results — ``accuracy``,
``base_accuracy`` and per example ``correct``, ``base_correct`` — and adds nothing. Any other metric stores its
response under its own name (``top5``, ``base_top5``, ``top5_per_image``, ``base_top5_per_image``) and records
itself in the Dataset's attributes (``metric``, ``metric_higher_is_better`` as 1 or 0, ``metric_definition`` as
JSON), so that the results say what they hold and `fragility.scores` reads the right variable the right way round
(`stored`). The sweep's ``chance`` is the metric's chance level (NaN where it has none).

What stays top-1 accuracy whatever the metric: the ε search (constraints 2 and 3 of Sec. 4.3, adversarial accuracy
≈ ρ · clean accuracy): the attack is about misclassification, and ε is the same whichever response is measured.
"""
from .base import DEFAULT, METRICS, Metric, check_name, register_metric
from .accuracy import Accuracy
from .topk import TopK
from .function import FunctionMetric, function_path, metric
from .settings import as_metric, from_settings, profile_setting, shown, stored

__all__ = ["Accuracy", "DEFAULT", "FunctionMetric", "METRICS", "Metric", "TopK", "as_metric", "check_name",
           "from_settings", "function_path", "metric", "profile_setting", "register_metric", "shown", "stored"]
