//! Prometheus metrics of the control plane (prometheus-client; nothing here is a hot path).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub method: String,
    pub route: String,
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    pub route: String,
}

pub struct Metrics {
    registry: Registry,
    pub requests: Family<RequestLabels, Counter>,
    pub latency: Family<RouteLabels, Histogram>,
    pub outbox_backlog: Gauge,
    pub published: Counter,
    pub publish_failures: Counter,
    /// Commit to NATS acknowledgement.
    pub publish_latency: Histogram,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("zcproxy_control");
        let requests = Family::<RequestLabels, Counter>::default();
        let latency = Family::<RouteLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.0005, 2.0, 14))
        });
        let outbox_backlog = Gauge::default();
        let published = Counter::default();
        let publish_failures = Counter::default();
        let publish_latency = Histogram::new(exponential_buckets(0.0005, 2.0, 16));
        registry.register(
            "http_requests",
            "HTTP requests by route and status",
            requests.clone(),
        );
        registry.register(
            "http_request_duration_seconds",
            "HTTP request latency by route",
            latency.clone(),
        );
        registry.register(
            "outbox_backlog",
            "Committed changes not yet published",
            outbox_backlog.clone(),
        );
        registry.register(
            "events_published",
            "Events acknowledged by NATS",
            published.clone(),
        );
        registry.register(
            "publish_failures",
            "Failed publish attempts",
            publish_failures.clone(),
        );
        registry.register(
            "publish_latency_seconds",
            "Commit to NATS acknowledgement",
            publish_latency.clone(),
        );
        Metrics {
            registry,
            requests,
            latency,
            outbox_backlog,
            published,
            publish_failures,
            publish_latency,
        }
    }
}

impl Metrics {
    pub fn render(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}
