//! The result of one run: a JSON object per line (the same field names as the etcd/NATS
//! anchor tool, so the two can be put side by side), or a human table.

use comfy_table::{presets, Table};
use hdrhistogram::Histogram;
use serde::Serialize;
use serde_json::{Map, Value};

use super::stats::{new_hist, CpuUsage, Stats};

/// Fields every workload reports; workload-specific ones go to `extra`.
#[derive(Debug, Serialize)]
pub struct Report {
    pub workload: String,
    pub clients: usize,
    pub duration_s: f64,
    pub ok_ops: u64,
    pub failed_ops: u64,
    pub ops_per_s: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
    pub mean_ms: f64,
    pub attempts_per_s: f64,
    pub errors: u64,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub error_samples: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cycle_p50_ms: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cycle_p99_ms: Option<f64>,
    pub warmup_s: f64,
    pub server_version: String,
    pub server_cpu_s: f64,
    pub bench_cpu_s: f64,
    pub machine_busy_pct: f64,
    pub machine_steal_pct: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server_cpu_us_per_op: Option<f64>,
    pub leader: String,
    pub client0_endpoint: String,
    pub tag: String,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// Samples of distinct error messages kept in a report.
const MAX_REPORT_ERROR_SAMPLES: usize = 5;

/// What a workload hands back.
pub struct Outcome {
    pub stats: Vec<Stats>,
    pub cpu: CpuUsage,
    pub extra: Map<String, Value>,
}

/// Where the run happened, for the report.
pub struct RunInfo {
    pub workload: String,
    pub clients: usize,
    pub duration_s: f64,
    pub warmup_s: f64,
    pub server_version: String,
    pub leader: String,
    pub client0_endpoint: String,
    pub tag: String,
}

/// Rounds to 3 decimals (microsecond resolution for milliseconds).
pub fn r3(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}

fn ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

fn quantile_ms(hist: &Histogram<u64>, q: f64) -> f64 {
    ms(hist.value_at_quantile(q))
}

impl Report {
    pub fn build(info: RunInfo, outcome: Outcome) -> anyhow::Result<Report> {
        let mut hist = new_hist()?;
        let mut hist2 = new_hist()?;
        let (mut ok, mut failed, mut errors) = (0u64, 0u64, 0u64);
        let mut samples: Vec<String> = Vec::new();
        for s in &outcome.stats {
            hist.add(&s.hist)?;
            hist2.add(&s.hist2)?;
            ok += s.ok;
            failed += s.failed;
            errors += s.errors;
            for e in &s.error_samples {
                if samples.len() < MAX_REPORT_ERROR_SAMPLES && !samples.contains(e) {
                    samples.push(e.clone());
                }
            }
        }
        let d = info.duration_s.max(f64::MIN_POSITIVE);
        let cpu = outcome.cpu;
        let cycle = !hist2.is_empty();
        Ok(Report {
            workload: info.workload,
            clients: info.clients,
            duration_s: info.duration_s,
            ok_ops: ok,
            failed_ops: failed,
            ops_per_s: r3(ok as f64 / d),
            p50_ms: quantile_ms(&hist, 0.50),
            p99_ms: quantile_ms(&hist, 0.99),
            p999_ms: quantile_ms(&hist, 0.999),
            max_ms: ms(hist.max()),
            mean_ms: r3(hist.mean() / 1000.0),
            attempts_per_s: r3((ok + failed) as f64 / d),
            errors,
            error_samples: samples,
            cycle_p50_ms: cycle.then(|| quantile_ms(&hist2, 0.50)),
            cycle_p99_ms: cycle.then(|| quantile_ms(&hist2, 0.99)),
            warmup_s: info.warmup_s,
            server_version: info.server_version,
            server_cpu_s: r3(cpu.server_s),
            bench_cpu_s: r3(cpu.bench_s),
            machine_busy_pct: r3(cpu.machine_busy_pct),
            machine_steal_pct: r3(cpu.machine_steal_pct),
            server_cpu_us_per_op: (ok > 0).then(|| r3(cpu.server_s * 1e6 / ok as f64)),
            leader: info.leader,
            client0_endpoint: info.client0_endpoint,
            tag: info.tag,
            extra: outcome.extra,
        })
    }

    /// The report as a two-column table.
    pub fn table(&self) -> String {
        let opt = |v: Option<f64>| v.map_or_else(|| "-".to_owned(), |v| v.to_string());
        let rows: Vec<(&str, String)> = vec![
            ("workload", self.workload.clone()),
            ("clients", self.clients.to_string()),
            ("duration s", self.duration_s.to_string()),
            ("ok ops", self.ok_ops.to_string()),
            ("failed ops", self.failed_ops.to_string()),
            ("errors", self.errors.to_string()),
            ("ops/s", self.ops_per_s.to_string()),
            ("attempts/s", self.attempts_per_s.to_string()),
            ("p50 ms", self.p50_ms.to_string()),
            ("p99 ms", self.p99_ms.to_string()),
            ("p99.9 ms", self.p999_ms.to_string()),
            ("max ms", self.max_ms.to_string()),
            ("mean ms", self.mean_ms.to_string()),
            ("cycle p50 ms", opt(self.cycle_p50_ms)),
            ("cycle p99 ms", opt(self.cycle_p99_ms)),
            ("server CPU us/op", opt(self.server_cpu_us_per_op)),
            ("server CPU s", self.server_cpu_s.to_string()),
            ("bench CPU s", self.bench_cpu_s.to_string()),
            ("machine busy %", self.machine_busy_pct.to_string()),
            ("machine steal %", self.machine_steal_pct.to_string()),
            ("leader", self.leader.clone()),
            ("client 0 endpoint", self.client0_endpoint.clone()),
            ("server version", self.server_version.clone()),
        ];
        let rows = rows
            .into_iter()
            .map(|(key, value)| (key.to_owned(), value))
            .chain(
                self.error_samples
                    .iter()
                    .map(|sample| ("error sample".to_owned(), sample.clone())),
            )
            .chain(flatten("", &self.extra));
        metric_table(rows)
    }
}

/// A METRIC/VALUE table without borders.
/// A report's JSON fields as a METRIC/VALUE table, one field per row.
pub fn fields_table(report: &impl Serialize) -> anyhow::Result<String> {
    let value = serde_json::to_value(report)?;
    let rows = value
        .as_object()
        .map(|o| {
            o.iter()
                .map(|(k, v)| (k.clone(), v.to_string()))
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    Ok(metric_table(rows))
}

fn metric_table(rows: impl IntoIterator<Item = (String, String)>) -> String {
    let mut table = Table::new();
    table.load_preset(presets::NOTHING);
    table.set_header(vec!["METRIC", "VALUE"]);
    for (key, value) in rows {
        table.add_row(vec![key, value]);
    }
    table.to_string()
}

/// `verify: {ok: true}` → `verify.ok  true`, strings without quotes.
fn flatten(prefix: &str, fields: &Map<String, Value>) -> Vec<(String, String)> {
    let mut rows = Vec::new();
    for (key, value) in fields {
        let name = if prefix.is_empty() {
            key.clone()
        } else {
            format!("{prefix}.{key}")
        };
        match value {
            Value::Object(inner) => rows.extend(flatten(&name, inner)),
            Value::String(s) => rows.push((name, s.clone())),
            other => rows.push((name, other.to_string())),
        }
    }
    rows
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nested_fields_flatten_into_dotted_rows() {
        let value = serde_json::json!({"a": 1, "verify": {"ok": true, "why": "fine"}});
        let Value::Object(map) = value else {
            unreachable!()
        };
        let rows = flatten("", &map);
        assert_eq!(
            rows,
            vec![
                ("a".to_owned(), "1".to_owned()),
                ("verify.ok".to_owned(), "true".to_owned()),
                ("verify.why".to_owned(), "fine".to_owned()),
            ]
        );
    }
}
