"""Grafana dashboards as code (grafana-foundation-sdk), shipped as ConfigMaps.

The chart's Grafana sidecar loads every ConfigMap labelled
`grafana_dashboard: "1"`. On the hub the dashboards show the whole fleet (every
site remote-writes there); on another site they show that site alone.

Series stored by the Prometheus that Grafana queries carry no `site` label
(external labels are added only on the way out), while remote-written ones do.
Every query therefore fills an empty `site` with the name of the site the
dashboard is rendered for.
"""

from __future__ import annotations

import json
from typing import Any

from grafana_foundation_sdk.builders import dashboard as gdash
from grafana_foundation_sdk.builders import prometheus as gprom
from grafana_foundation_sdk.builders import stat as gstat
from grafana_foundation_sdk.builders import table as gtable
from grafana_foundation_sdk.builders import text as gtext
from grafana_foundation_sdk.builders import timeseries as gts
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models.dashboard import DataSourceRef

from .context import SiteContext

DATASOURCE = DataSourceRef(type_val="prometheus", uid="${datasource}")


class _Board:
    """Collects panels with unique ids and query ref ids."""

    def __init__(self, ctx: SiteContext, uid: str, title: str, description: str) -> None:
        self.ctx = ctx
        self.next_id = 1
        self.builder = (
            gdash.Dashboard(title)
            .uid(uid)
            .description(description)
            .tags(["gpufleet", ctx.fleet])
            .time("now-24h", "now")
            .refresh("1m")
            .timezone("utc")
            .readonly()
            .with_variable(gdash.DatasourceVariable("datasource").label("Data source").type("prometheus"))
        )

    def site(self, expr: str) -> str:
        return f'label_replace({expr}, "site", "{self.ctx.site}", "site", "")'

    def _targets(self, panel: Any, queries: list[tuple[str, str]], instant: bool = False) -> Any:
        for i, (expr, legend) in enumerate(queries):
            q = gprom.Dataquery().expr(expr).legend_format(legend).ref_id(chr(ord("A") + i))
            q = q.instant() if instant else q.range()
            panel = panel.with_target(q)
        return panel

    def _common(self, panel: Any, title: str, description: str, unit: str, width: int, height: int) -> Any:
        panel = panel.id(self.next_id).title(title).description(description).unit(unit)
        self.next_id += 1
        return panel.datasource(DATASOURCE).span(width).height(height)

    def row(self, title: str) -> None:
        self.builder = self.builder.with_row(gdash.Row(title).id(self.next_id))
        self.next_id += 1

    def timeseries(self, title: str, description: str, queries: list[tuple[str, str]], unit: str = "short", width: int = 12, height: int = 8) -> None:
        panel = self._common(gts.Panel(), title, description, unit, width, height)
        self.builder = self.builder.with_panel(self._targets(panel, queries))

    def stat(self, title: str, description: str, queries: list[tuple[str, str]], unit: str = "short", width: int = 6, height: int = 5) -> None:
        panel = self._common(gstat.Panel(), title, description, unit, width, height)
        self.builder = self.builder.with_panel(self._targets(panel, queries, instant=True))

    def table(self, title: str, description: str, queries: list[tuple[str, str]], unit: str = "short", width: int = 12, height: int = 8) -> None:
        panel = self._common(gtable.Panel(), title, description, unit, width, height)
        self.builder = self.builder.with_panel(self._targets(panel, queries, instant=True))

    def text(self, title: str, markdown: str, width: int = 12, height: int = 8) -> None:
        panel = gtext.Panel().id(self.next_id).title(title).content(markdown).span(width).height(height)
        self.next_id += 1
        self.builder = self.builder.with_panel(panel)

    def json(self) -> dict[str, Any]:
        return _drop_nulls(json.loads(json.dumps(self.builder.build(), cls=JSONEncoder)))


def _drop_nulls(value: Any) -> Any:
    """Leave unset fields out (Grafana applies its defaults) instead of null."""
    if isinstance(value, dict):
        return {k: _drop_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_drop_nulls(v) for v in value]
    return value


def _sel(ctx: SiteContext, target: str, *extra: str) -> str:
    return ", ".join([f'job="{ctx.cfg["targets"][target]["job"]}"', *extra])


def occupancy(ctx: SiteContext) -> dict[str, Any]:
    b = _Board(ctx, "gpufleet-gpu-occupancy", "GPU fleet: occupancy by site",
               "Whole GPUs allocated to running pods against GPUs allocatable, and how busy they are, per site.")
    ksm = _sel(ctx, "kube_state_metrics")
    dcgm = _sel(ctx, "dcgm")
    requested = (
        f'sum by (site) (kube_pod_container_resource_requests{{{ksm}, resource="nvidia_com_gpu"}}\n'
        f'  * on (site, namespace, pod) group_left () (max by (site, namespace, pod) (kube_pod_status_phase{{{ksm}, phase="Running"}} == 1)))'
    )
    allocatable = f'sum by (site) (kube_node_status_allocatable{{{ksm}, resource="nvidia_com_gpu"}})'
    b.row("Allocation")
    b.timeseries("GPU occupancy by site", "Share of allocatable whole GPUs requested by running pods (MIG slices are counted separately below).",
                 [(f"{b.site(requested)}\n/\n{b.site(allocatable)}", "{{site}}")], unit="percentunit")
    b.timeseries("GPUs allocated and allocatable by site", "Whole GPUs.",
                 [(b.site(requested), "{{site}} allocated"), (b.site(allocatable), "{{site}} allocatable")])
    b.timeseries("MIG slices allocated by site and profile", "MIG slices requested by running pods.",
                 [(b.site(f'sum by (site, resource) (kube_pod_container_resource_requests{{{ksm}, resource=~"nvidia_com_mig_.+"}})'), "{{site}} {{resource}}")])
    b.table("GPUs by site and model", "GPUs reporting to dcgm-exporter.",
            [(b.site(f"count by (site, modelName) (count by (site, modelName, Hostname, UUID) (DCGM_FI_DEV_GPU_TEMP{{{dcgm}}}))"), "")])
    b.row("Utilisation")
    b.timeseries("GPU utilisation by site", "Mean DCGM GPU utilisation over every GPU of the site.",
                 [(b.site(f"avg by (site) (DCGM_FI_DEV_GPU_UTIL{{{dcgm}}})"), "{{site}}")], unit="percent")
    b.timeseries("Tensor pipe activity by site", "Mean share of cycles the tensor cores are busy (DCGM profiling).",
                 [(b.site(f"avg by (site) (DCGM_FI_PROF_PIPE_TENSOR_ACTIVE{{{dcgm}}})"), "{{site}}")], unit="percentunit")
    b.timeseries("GPU memory used by site", "Frame buffer in use.",
                 [(b.site(f"sum by (site) (DCGM_FI_DEV_FB_USED{{{dcgm}}}) * 1024 * 1024"), "{{site}}")], unit="bytes")
    b.timeseries("GPU errors by site", "XID, double-bit ECC and NVLink CRC errors (enabled by the gpufleet counters file).",
                 [(b.site(f"count by (site) (DCGM_FI_DEV_XID_ERRORS{{{dcgm}}} > 0)"), "{{site}} GPUs with an XID"),
                  (b.site(f"sum by (site) (increase(DCGM_FI_DEV_ECC_DBE_VOL_TOTAL{{{dcgm}}}[1h]))"), "{{site}} DBE / h"),
                  (b.site(f"sum by (site) (increase(DCGM_FI_DEV_NVLINK_CRC_DATA_ERROR_COUNT_TOTAL{{{dcgm}}}[1h]))"), "{{site}} NVLink CRC / h")])
    return b.json()


def serving(ctx: SiteContext) -> dict[str, Any]:
    b = _Board(ctx, "gpufleet-serving", "GPU fleet: serving per model",
               "vLLM latency, throughput and cache hit ratios per model and site, and the gateway's response cache.")
    # The models served here (on the hub: every model of the fleet).
    b.builder = b.builder.with_variable(
        gdash.CustomVariable("model").label("Model").values(",".join(ctx.models) or "none")
        .multi(True).include_all(True).all_value(".*")
    )
    v = _sel(ctx, "vllm", 'model=~"$model"')
    gw = _sel(ctx, "gateway", 'model=~"$model"')
    by = "site, model"
    b.row("Latency")
    b.timeseries("Time to first token p95", "95th percentile of vLLM's time to first token.",
                 [(b.site(f"histogram_quantile(0.95, sum by ({by}, le) (rate(vllm:time_to_first_token_seconds_bucket{{{v}}}[5m])))"), "{{site}} {{model}}")], unit="s")
    # vLLM 0.24 exports vllm:inter_token_latency_seconds (vllm/v1/metrics/loggers.py).
    b.timeseries("Time per output token p95", "95th percentile of inter-token latency.",
                 [(b.site(f"histogram_quantile(0.95, sum by ({by}, le) (rate(vllm:inter_token_latency_seconds_bucket{{{v}}}[5m])))"), "{{site}} {{model}}")], unit="s")
    b.timeseries("End-to-end latency p50 / p99", "Whole request, queueing included.",
                 [(b.site(f"histogram_quantile(0.5, sum by ({by}, le) (rate(vllm:e2e_request_latency_seconds_bucket{{{v}}}[5m])))"), "p50 {{site}} {{model}}"),
                  (b.site(f"histogram_quantile(0.99, sum by ({by}, le) (rate(vllm:e2e_request_latency_seconds_bucket{{{v}}}[5m])))"), "p99 {{site}} {{model}}")], unit="s")
    b.timeseries("SLO: slow and failed request ratios (1h)", "Recorded by the gpufleet serving rules.",
                 [(b.site("namespace_model:vllm_ttft_slow:ratio_rate1h"), "slow {{site}} {{model}}"),
                  (b.site("namespace_model:vllm_http_errors:ratio_rate1h"), "5xx {{site}} {{model}}")], unit="percentunit")
    b.row("Throughput")
    b.timeseries("Requests per second", "Finished requests by model.",
                 [(b.site(f"sum by ({by}) (rate(vllm:request_success_total{{{v}}}[5m]))"), "{{site}} {{model}}")], unit="reqps")
    b.timeseries("Generated tokens per second", "Output tokens by model.",
                 [(b.site(f"sum by ({by}) (rate(vllm:generation_tokens_total{{{v}}}[5m]))"), "{{site}} {{model}}")])
    b.timeseries("Prompt tokens per second", "Input tokens by model.",
                 [(b.site(f"sum by ({by}) (rate(vllm:prompt_tokens_total{{{v}}}[5m]))"), "{{site}} {{model}}")])
    b.timeseries("Requests running and waiting", "Scheduler queue per model.",
                 [(b.site(f"sum by ({by}) (vllm:num_requests_running{{{v}}})"), "running {{site}} {{model}}"),
                  (b.site(f"sum by ({by}) (vllm:num_requests_waiting{{{v}}})"), "waiting {{site}} {{model}}")])
    b.row("Caches")
    b.timeseries("Prefix cache hit ratio", "Share of prompt tokens found in vLLM's prefix cache.",
                 [(b.site(f"sum by ({by}) (rate(vllm:prefix_cache_hits_total{{{v}}}[5m]))\n/\nsum by ({by}) (rate(vllm:prefix_cache_queries_total{{{v}}}[5m]))"), "{{site}} {{model}}")], unit="percentunit")
    # Hits over all model requests: LiteLLM 1.103.0 counts a hit in
    # litellm_cache_hits_metric and every request, hit or not, in
    # litellm_requests_metric; litellm_cache_misses_metric stays unset, since an
    # uncached answer carries cache_hit None, not False
    # (litellm/integrations/prometheus.py _increment_cache_metrics).
    b.timeseries("Response cache hit ratio (gateway)", "Share of requests the gateway answered from its response cache.",
                 [(b.site(f"sum by (site, model) (rate(litellm_cache_hits_metric_total{{{gw}}}[5m]))\n/\nsum by (site, model) (rate(litellm_requests_metric_total{{{gw}}}[5m]))"), "{{site}} {{model}}")], unit="percentunit")
    b.timeseries("KV cache usage", "Highest KV-cache usage of any replica.",
                 [(b.site(f"max by ({by}) (vllm:kv_cache_usage_perc{{{v}}})"), "{{site}} {{model}}")], unit="percentunit")
    return b.json()


def queues(ctx: SiteContext) -> dict[str, Any]:
    b = _Board(ctx, "gpufleet-queues", "GPU fleet: queue backlog and cloud burst",
               "Kueue backlog per ClusterQueue and where admitted work runs: data centres first, AWS as burst.")
    k = _sel(ctx, "kueue")
    ksm = _sel(ctx, "kube_state_metrics")
    b.row("Backlog")
    b.timeseries("Pending workloads", "Workloads waiting for admission, by ClusterQueue and state.",
                 [(b.site("sum by (site, cluster_queue, status) (kueue_pending_workloads{%s})" % k), "{{site}} {{cluster_queue}} {{status}}")])
    b.timeseries("Admission wait p90", "Time from creation to admission.",
                 [(b.site(f"histogram_quantile(0.9, sum by (site, cluster_queue, le) (rate(kueue_admission_wait_time_seconds_bucket{{{k}}}[30m])))"), "{{site}} {{cluster_queue}}")], unit="s")
    b.timeseries("Admitted workloads running", "Admitted, unfinished workloads by site.",
                 [(b.site(f"sum by (site) (kueue_admitted_active_workloads{{{k}}})"), "{{site}}")])
    b.timeseries("Quota used", "Resources reserved by admitted workloads, per ClusterQueue and flavor.",
                 [(b.site(f"sum by (site, cluster_queue, flavor, resource) (kueue_cluster_queue_resource_usage{{{k}, resource=\"nvidia.com/gpu\"}})"), "{{site}} {{cluster_queue}} {{flavor}}")])
    b.row("Cloud burst")
    admitted = b.site(f"sum by (site) (kueue_admitted_active_workloads{{{k}}})")
    # The hub's MultiKueue queues count the workloads they dispatched a second
    # time: the share is taken over the worker sites only.
    workers = [name for name, _ in ctx.sites if name != ctx.hub]
    b.timeseries("Share of running workloads in AWS",
                 f"Admitted workloads on the AWS sites ({', '.join(ctx.cloud_sites) or 'none'}) over all worker sites.",
                 [(f"sum({_only_sites(admitted, ctx.cloud_sites)})\n/\nsum({_only_sites(admitted, workers)})", "AWS share")], unit="percentunit")
    b.timeseries("GPUs in use in AWS", "Whole GPUs requested by running pods on the AWS sites.",
                 [(_only_sites(b.site(f'sum by (site) (kube_pod_container_resource_requests{{{ksm}, resource="nvidia_com_gpu"}} * on (site, namespace, pod) group_left () (max by (site, namespace, pod) (kube_pod_status_phase{{{ksm}, phase="Running"}} == 1)))'), ctx.cloud_sites), "{{site}}")])
    return b.json()


def _only_sites(expr: str, sites: list[str]) -> str:
    """Keep the series of `expr` whose `site` is one of `sites`."""
    if not sites:
        return "vector(0)"
    keep = " or ".join(f'label_replace(vector(1), "site", "{s}", "", "")' for s in sites)
    return f"({expr}) and on (site) ({keep})"


def cost(ctx: SiteContext) -> dict[str, Any]:
    b = _Board(ctx, "gpufleet-cost", "GPU fleet: cost per site",
               "GPU-hours times the hourly price of each accelerator (price table in k8s/monitoring/config.py).")
    b.row("Cost")
    hourly = b.site("sum by (site) (gpufleet:gpu_cost_usd_per_hour:sum)")
    b.timeseries("Cost per hour by site", "GPUs present at each site times their hourly price.",
                 [(hourly, "{{site}}")], unit="currencyUSD")
    b.table("Cost over the selected range by site", "Mean hourly cost over the range times its length in hours.",
            [(b.site("sum by (site) (avg_over_time(gpufleet:gpu_cost_usd_per_hour:sum[$__range]))") + " * $__range_s / 3600", "")], unit="currencyUSD")
    b.table("GPU-hours over the selected range by site and accelerator", "GPUs present, averaged over the range, times its length in hours.",
            [(b.site("sum by (site, accelerator) (avg_over_time(gpufleet:gpus:count[$__range]))") + " * $__range_s / 3600", "")])
    b.stat("Fleet cost per hour", "All sites.", [(f"sum({hourly})", "")], unit="currencyUSD")
    rows = ["| accelerator | AWS $/GPU-h | data centre $/GPU-h |", "|---|---|---|"]
    for accel, entry in ctx.cfg["gpu_prices_usd_per_hour"].items():
        rows.append(f"| {accel} | {entry['aws']:.2f} | {entry['datacenter']:.2f} |")
    b.text("Price table", "\n".join(rows) + "\n\nFrom `k8s/monitoring/config.py`; see the comment there for sources.", width=6, height=5)
    return b.json()


def dashboards(ctx: SiteContext) -> dict[str, dict[str, Any]]:
    return {
        "gpu-occupancy": occupancy(ctx),
        "serving": serving(ctx),
        "queues": queues(ctx),
        "cost": cost(ctx),
    }


def configmaps(ctx: SiteContext) -> list[dict[str, Any]]:
    dash = ctx.cfg["dashboards"]
    out = []
    for name, board in dashboards(ctx).items():
        out.append(
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {
                    "name": f"gpufleet-dashboard-{name}",
                    "namespace": ctx.namespace,
                    "labels": {dash["label"]: dash["label_value"], "app.kubernetes.io/part-of": "gpufleet"},
                    "annotations": {"grafana_folder": dash["folder"]},
                },
                "data": {f"gpufleet-{name}.json": json.dumps(board, indent=2, sort_keys=True)},
            }
        )
    return out
