//! `GET /metrics`: Prometheus text (format 0.0.4), from `prometheus-client`.
//!
//! - Requests: `elex_http_requests_total{method,route,status}` and
//!   `elex_http_request_duration_seconds{method,route}` (a histogram), the
//!   route as its template (`/v1/agents/{id}`), so an id is never a label.
//! - Agents, read from the agents' database at each scrape (their use across
//!   runs, as `elex agents stats` shows it), for each agent that has been
//!   called: `elex_agent_calls_total`, `elex_agent_errors_total`,
//!   `elex_agent_fuel_total`, `elex_agent_recycles_total`,
//!   `elex_agent_evictions_total`, `elex_agent_memory_bytes`,
//!   `elex_agent_memory_peak_bytes` and `elex_agent_call_duration_seconds` (a
//!   histogram), labelled `agent`; and `elex_agents{state}`, the running
//!   swarm's agents by state.

use std::sync::Arc;
use std::time::Duration;

use elex_ran::Runtime;
use elex_ran::host::AgentState;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// The content type of [`Metrics::render`]'s text.
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

type RequestLabels = [(&'static str, String); 3];
type RouteLabels = [(&'static str, String); 2];

/// The service's metrics.
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    latency: Family<RouteLabels, Histogram>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

/// Upper edges of the agent call latency buckets, in seconds: 25 µs to
/// ~0.8 s, doubling.
fn call_buckets() -> Vec<f64> {
    exponential_buckets(25e-6, 2.0, 16).collect()
}

impl Metrics {
    /// Metrics for a service over `runtime`.
    pub fn new(runtime: Arc<Runtime>) -> Metrics {
        let mut registry = Registry::default();
        let requests = Family::<RequestLabels, Counter>::default();
        let latency = Family::<RouteLabels, Histogram>::new_with_constructor(|| {
            // 50 µs to ~13 s, doubling.
            Histogram::new(exponential_buckets(50e-6, 2.0, 19))
        });
        registry.register(
            "elex_http_requests",
            "HTTP requests answered, by route and status",
            requests.clone(),
        );
        registry.register(
            "elex_http_request_duration_seconds",
            "Time from a request to its response, by route",
            latency.clone(),
        );
        registry.register_collector(Box::new(AgentMetrics { runtime }));
        Metrics { registry, requests, latency }
    }

    /// Counts one answered request.
    pub fn record(&self, method: &str, route: &str, status: u16, took: Duration) {
        self.requests
            .get_or_create(&[
                ("method", method.to_string()),
                ("route", route.to_string()),
                ("status", status.to_string()),
            ])
            .inc();
        self.latency
            .get_or_create(&[("method", method.to_string()), ("route", route.to_string())])
            .observe(took.as_secs_f64());
    }

    /// Every metric as Prometheus text; reads the agents' database (call it
    /// off the async threads).
    pub fn render(&self) -> Result<String, std::fmt::Error> {
        let mut out = String::new();
        prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry)?;
        Ok(out)
    }
}

/// A metric of an agent's use: name, help, and how to read it.
type UsageMetric = (&'static str, &'static str, fn(&elex_ran::host::usage::Usage) -> u64);

/// The agents' use, read at each scrape.
struct AgentMetrics {
    runtime: Arc<Runtime>,
}

impl std::fmt::Debug for AgentMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentMetrics").finish_non_exhaustive()
    }
}

impl Collector for AgentMetrics {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        // The running swarm's agents by state.
        let swarm = self.runtime.swarm();
        let mut states = [("running", 0i64), ("evicted", 0), ("failed", 0)];
        for &slot in self.runtime.agents().slots() {
            let Ok(status) = swarm.status(slot) else { continue };
            let i = match status.state {
                AgentState::Running => 0,
                AgentState::Evicted => 1,
                AgentState::Failed => 2,
                _ => continue,
            };
            states[i].1 += 1;
        }
        let mut family = encoder.encode_descriptor(
            "elex_agents",
            "Agents of the running swarm, by state",
            None,
            MetricType::Gauge,
        )?;
        for (state, n) in states {
            ConstGauge::new(n).encode(family.encode_family(&[("state", state)])?)?;
        }

        let usage = match self.runtime.usage() {
            Ok(usage) => usage,
            Err(e) => {
                tracing::warn!(error = %e, "agent metrics left out: the agents' use is unreadable");
                return Ok(());
            }
        };
        let used: Vec<_> = usage.iter().filter(|(_, u)| u.calls > 0).collect();
        let counters: [UsageMetric; 5] = [
            ("elex_agent_calls", "Calls to the agent, failed ones included", |u| u.calls),
            ("elex_agent_errors", "Calls to the agent that failed (errors, traps, budget breaches)", |u| {
                u.errors
            }),
            ("elex_agent_fuel", "Fuel the agent's calls consumed", |u| u.fuel_used),
            ("elex_agent_recycles", "Instances re-created after a trap or failed health checks", |u| {
                u.recycles
            }),
            ("elex_agent_evictions", "Times the agent's instance was evicted", |u| u.evictions),
        ];
        for (name, help, value) in counters {
            let mut family = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
            for (agent, u) in &used {
                family
                    .encode_family(&[("agent", agent.as_str())])?
                    .encode_counter::<NoLabelSet, _, u64>(&value(u), None)?;
            }
        }
        let gauges: [UsageMetric; 2] = [
            ("elex_agent_memory_bytes", "Linear memory of the agent's instance after its last call", |u| {
                u.memory_bytes
            }),
            (
                "elex_agent_memory_peak_bytes",
                "Largest linear memory any of the agent's instances held",
                |u| u.memory_peak_bytes,
            ),
        ];
        for (name, help, value) in gauges {
            let mut family = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
            for (agent, u) in &used {
                let v = i64::try_from(value(u)).unwrap_or(i64::MAX);
                ConstGauge::new(v).encode(family.encode_family(&[("agent", agent.as_str())])?)?;
            }
        }
        let edges = call_buckets();
        let mut family = encoder.encode_descriptor(
            "elex_agent_call_duration_seconds",
            "Time the agent's calls took",
            None,
            MetricType::Histogram,
        )?;
        for (agent, u) in &used {
            // Each bucket's own count (the encoder sums them up; +Inf is
            // the count).
            let mut below = 0;
            let buckets: Vec<(f64, u64)> = edges
                .iter()
                .map(|&e| {
                    let at_most = u.latency.at_most(Duration::from_secs_f64(e));
                    let own = at_most - below;
                    below = at_most;
                    (e, own)
                })
                .collect();
            family.encode_family(&[("agent", agent.as_str())])?.encode_histogram::<NoLabelSet>(
                u.busy.as_secs_f64(),
                u.calls,
                &buckets,
                None,
            )?;
        }
        Ok(())
    }
}
