"""A real Prometheus (Debian's package, a plain process on a free loopback port) scraping a TorchServe
of its own: the counts it stores match a known mix of requests, the per-stage histograms give
sane quantiles, and every expression of the Grafana dashboard evaluates on what was scraped."""

from __future__ import annotations

import io
import math
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlparse

import pytest
from PIL import Image

from service.local.torchserve import TorchServe
from service.names import DEFAULT_MODEL as MODEL
from service.photos import photos
from tests.prometheus import Prometheus
from tests.test_metrics_dashboard import dashboard_expressions


def truncated_jpeg() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (640, 480), (200, 30, 30)).save(buffer, "JPEG")
    return buffer.getvalue()[:600]


@pytest.fixture(scope="module")
def scraped(model_store, tmp_path_factory):
    """A TorchServe and a Prometheus scraping it every second; the known mix sent once."""
    with TorchServe.on_free_ports(tmp_path_factory.mktemp("prom-ts"), model_store) as server:
        target = urlparse(server.endpoints.metrics).netloc
        with Prometheus(tmp_path_factory.mktemp("prometheus"), [target]) as prometheus:
            client, api = server.client(), prometheus.api()
            good = [path.read_bytes() for path in photos().values()]
            bad = [(b"plain text, no image", 415), (truncated_jpeg(), 400), (b"", 400)]
            # First one photo and one refusal, until Prometheus has their series: rate() needs a
            # series' earlier samples to count what the mix adds.
            assert client.predict(MODEL, good[0], filename="first.jpg").status_code == 200
            assert client.predict(MODEL, bad[0][0], filename="x").status_code == 415
            assert api.wait_for("sum(handler_images_total) + sum(handler_refused_total)", lambda v: v == 2) == 2
            with ThreadPoolExecutor(4) as pool:  # concurrent: batches of several images form
                statuses = list(pool.map(lambda body: client.predict(MODEL, body, filename="x").status_code,
                                         good + [body for body, _ in bad]))
            assert statuses == [200] * len(good) + [status for _, status in bad]
            expected_images = 1 + len(good)
            api.wait_for("sum(handler_images_total)", lambda v: v == expected_images)
            api.wait_for("sum(handler_refused_total)", lambda v: v == 1 + len(bad))
            yield server, api, expected_images


def test_counts_match_what_was_sent(scraped):
    _, api, images = scraped
    assert api.value(f'sum(handler_images_total{{ModelName="{MODEL}"}})') == images
    assert api.value('sum(handler_stage_seconds_count{stage="forward"})') == images
    assert api.value('sum(handler_stage_seconds_count{stage="decode"})') == images
    assert api.value("sum(handler_batch_size_sum)") == images  # images run, whatever the batches
    refused = 4  # one before the mix, three in it
    assert api.value('sum(handler_stage_seconds_count{stage="parse"})') == images + refused
    requests = api.value(f'sum(ts_inference_requests_total{{model_name="{MODEL}"}})')
    assert requests == images + refused


def test_refusals_by_type(scraped):
    _, api, _ = scraped
    by_type = {r["metric"]["error"]: float(r["value"][1]) for r in api.query("sum by (error) (handler_refused_total)")}
    assert by_type == {"UnsupportedImage": 2, "InvalidImage": 1, "MissingImage": 1}


def test_forward_p95_is_in_a_sane_range(scraped):
    _, api, _ = scraped
    p95 = api.value('histogram_quantile(0.95, sum by (le) (rate(handler_stage_seconds_bucket{stage="forward"}[1m])))')
    assert p95 is not None and 0.001 < p95 < 5, p95  # ResNet-18 on a CPU: milliseconds to a second
    batch_p95 = api.value("histogram_quantile(0.95, sum by (le) (rate(handler_batch_forward_seconds_bucket[1m])))")
    assert batch_p95 is not None and 0.001 < batch_p95 < 10, batch_p95
    # Each image is observed as its batch's time / images, so the per-image sum is the batches' sum. (Their
    # quantiles have no fixed order: a slow large batch weighs once per batch but once per image per image.)
    per_image = api.value('sum(handler_stage_seconds_sum{stage="forward"})')
    per_batch = api.value("sum(handler_batch_forward_seconds_sum)")
    assert per_batch and abs(per_image - per_batch) <= 1e-6 * per_batch + 1e-9, (per_image, per_batch)


def test_worker_gauges(scraped):
    server, api, _ = scraped
    (worker,) = server.client().describe_model(MODEL).json()[0]["workers"]
    threads = api.query("handler_worker_threads")
    assert [r["metric"]["worker"] for r in threads] == [worker["id"]]
    assert 1 <= float(threads[0]["value"][1]) <= 64
    rss = api.value(f'handler_worker_rss_bytes{{worker="{worker["id"]}"}}')
    assert 50e6 < rss < 8e9
    assert api.value("count(time() - handler_worker_heartbeat_seconds < 30)") == 1
    (info,) = api.query("handler_runtime_info")
    assert info["metric"]["runtime"] and info["metric"]["precision"]


def test_every_dashboard_expression_evaluates_on_scraped_data(scraped):
    _, api, _ = scraped
    empty = []
    for title, expr in dashboard_expressions(model=MODEL, rate_interval="1m"):
        result = api.query(expr)  # a PromQL error raises
        values = [float(r["value"][1]) for r in result]
        if not [v for v in values if not math.isnan(v)]:
            empty.append(title)
    # Explanations were not asked for here; every other panel has data.
    assert set(empty) <= {"Explanations / s"}, empty
