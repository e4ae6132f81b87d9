//! `GET /metrics`: Prometheus text exposition of request counts and
//! latencies, and charge outcomes. Counters are lock-free atomics.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};

use super::AppState;

/// Upper bounds of the latency histogram buckets, in seconds.
const BUCKETS_SECS: [f64; 10] = [
    0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1.0,
];
const STATUS_CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];
pub const CHARGE_OUTCOMES: [&str; 4] = ["succeeded", "requires_capture", "declined", "refused"];

#[derive(Debug, Default)]
pub struct Metrics {
    requests_by_class: [AtomicU64; 5],
    latency_buckets: [AtomicU64; 10],
    latency_count: AtomicU64,
    latency_sum_micros: AtomicU64,
    charges_by_outcome: [AtomicU64; 4],
}

impl Metrics {
    pub fn observe_request(&self, status: u16, elapsed: Duration) {
        let class = usize::from(status / 100).saturating_sub(1).min(4);
        self.requests_by_class[class].fetch_add(1, Ordering::Relaxed);
        let secs = elapsed.as_secs_f64();
        for (i, bound) in BUCKETS_SECS.iter().enumerate() {
            if secs <= *bound {
                self.latency_buckets[i].fetch_add(1, Ordering::Relaxed);
            }
        }
        self.latency_count.fetch_add(1, Ordering::Relaxed);
        self.latency_sum_micros.fetch_add(
            u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
    }

    /// Counts one charge attempt by outcome (one of [`CHARGE_OUTCOMES`]).
    pub fn observe_charge(&self, outcome: &str) {
        if let Some(i) = CHARGE_OUTCOMES.iter().position(|o| *o == outcome) {
            self.charges_by_outcome[i].fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn exposition(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "# HELP scrip_http_requests_total HTTP requests answered, by status class."
        );
        let _ = writeln!(out, "# TYPE scrip_http_requests_total counter");
        for (i, class) in STATUS_CLASSES.iter().enumerate() {
            let _ = writeln!(
                out,
                "scrip_http_requests_total{{class=\"{class}\"}} {}",
                self.requests_by_class[i].load(Ordering::Relaxed)
            );
        }
        let _ = writeln!(
            out,
            "# HELP scrip_http_request_duration_seconds Time to answer a request."
        );
        let _ = writeln!(out, "# TYPE scrip_http_request_duration_seconds histogram");
        for (i, bound) in BUCKETS_SECS.iter().enumerate() {
            let _ = writeln!(
                out,
                "scrip_http_request_duration_seconds_bucket{{le=\"{bound}\"}} {}",
                self.latency_buckets[i].load(Ordering::Relaxed)
            );
        }
        let count = self.latency_count.load(Ordering::Relaxed);
        let _ = writeln!(
            out,
            "scrip_http_request_duration_seconds_bucket{{le=\"+Inf\"}} {count}"
        );
        let sum = self.latency_sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(out, "scrip_http_request_duration_seconds_sum {sum}");
        let _ = writeln!(out, "scrip_http_request_duration_seconds_count {count}");
        let _ = writeln!(
            out,
            "# HELP scrip_charges_total Charge attempts, by outcome."
        );
        let _ = writeln!(out, "# TYPE scrip_charges_total counter");
        for (i, outcome) in CHARGE_OUTCOMES.iter().enumerate() {
            let _ = writeln!(
                out,
                "scrip_charges_total{{outcome=\"{outcome}\"}} {}",
                self.charges_by_outcome[i].load(Ordering::Relaxed)
            );
        }
        out
    }
}

/// Prometheus metrics
///
/// Request counts by status class, latencies, charge outcomes and the store's
/// write groups, in the Prometheus text format.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "operations",
    security(()),
    responses(
        (status = 200, description = "The metrics.", body = String, content_type = "text/plain; version=0.0.4"),
        super::openapi::PublicErrors,
    )
)]
pub async fn render(State(state): State<AppState>) -> Response {
    let mut text = state.metrics.exposition();
    let w = state.store.write_stats();
    let _ = writeln!(
        text,
        "# HELP scrip_store_write_groups_total Write transactions committed."
    );
    let _ = writeln!(text, "# TYPE scrip_store_write_groups_total counter");
    let _ = writeln!(text, "scrip_store_write_groups_total {}", w.groups);
    let _ = writeln!(
        text,
        "# HELP scrip_store_write_operations_total Operations run inside committed write groups."
    );
    let _ = writeln!(text, "# TYPE scrip_store_write_operations_total counter");
    let _ = writeln!(text, "scrip_store_write_operations_total {}", w.operations);
    let _ = writeln!(
        text,
        "# HELP scrip_store_log_syncs_total Flushes of the write-ahead log to disk (one can cover several write transactions)."
    );
    let _ = writeln!(text, "# TYPE scrip_store_log_syncs_total counter");
    let _ = writeln!(text, "scrip_store_log_syncs_total {}", w.log_syncs);
    let mut r = text.into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4"),
    );
    r
}
