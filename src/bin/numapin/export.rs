//! The fleet's I/O: Prometheus' HTTP API (client), the exporter's HTTP endpoint (server),
//! textfile output by atomic rename, and the hold-back file `numapin plan --holdback --json`
//! writes. Formatting and parsing are the library's (`numapin::fleet`).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use numapin::fleet::prometheus;
use numapin::plan::holdback::{Holdback, NodeHoldback};
use numapin::plan::Fleet;
use numapin::snapshot::Snapshot;

use crate::CliError;

/// How long `numapin plan --prometheus` waits for the server.
const HTTP_TIMEOUT: Duration = Duration::from_secs(30);

/// Rebuilds every host's snapshot from the `numapin_*` series in the Prometheus at `url`.
pub fn snapshots_from_prometheus(
    url: &str,
    selector: Option<&str>,
) -> Result<Vec<(String, Snapshot)>, CliError> {
    let endpoint = format!("{}/api/v1/query", url.trim_end_matches('/'));
    let q = prometheus::query(selector.unwrap_or(""));
    let agent = ureq::AgentBuilder::new().timeout(HTTP_TIMEOUT).build();
    let body = match agent.get(&endpoint).query("query", &q).call() {
        Ok(r) => read_body(r, &endpoint)?,
        // Prometheus answers bad queries with 400 and a JSON error: show it.
        Err(ureq::Error::Status(_, r)) => read_body(r, &endpoint)?,
        Err(e) => {
            let what = match e {
                ureq::Error::Transport(t) => t.to_string(),
                other => other.to_string(),
            };
            return Err(CliError::Http {
                url: url.to_string(),
                what: format!(
                    "{what}; is Prometheus running there? --prometheus takes the server's base URL, e.g. http://prometheus:9090"
                ),
            });
        }
    };
    let samples = prometheus::samples_from_query_json(&body)?;
    let snaps = prometheus::snapshots_from_samples(&samples)?;
    if snaps.is_empty() {
        return Err(numapin::Error::PrometheusAnswer {
            what: format!("no numapin_* series match {q}"),
        }
        .into());
    }
    Ok(snaps)
}

fn read_body(r: ureq::Response, url: &str) -> Result<Vec<u8>, CliError> {
    use std::io::Read;
    let limit = numapin::snapshot::MAX_SNAPSHOT_BYTES * 16;
    let mut buf = Vec::new();
    r.into_reader()
        .take(limit + 1)
        .read_to_end(&mut buf)
        .map_err(|e| CliError::Http {
            url: url.to_string(),
            what: format!("reading the answer: {e}"),
        })?;
    if buf.len() as u64 > limit {
        return Err(CliError::Http {
            url: url.to_string(),
            what: format!("the answer is larger than {limit} bytes"),
        });
    }
    Ok(buf)
}

/// `numapin_failover_holdback_bytes` of every host, for a textfile collector on the planning
/// host.
pub fn holdback_metrics(fleet: &Fleet, h: &Holdback) -> String {
    let mut out = String::new();
    for host in fleet.hosts() {
        let mine: Vec<NodeHoldback> = h
            .nodes
            .iter()
            .filter(|e| e.host == host.name && e.host_id == host.host_id)
            .cloned()
            .collect();
        let snap = Snapshot {
            host: host.name.clone(),
            host_id: host.host_id.clone(),
            ..Snapshot::default()
        };
        let text = prometheus::exposition(&snap, Some(&mine));
        // Only the hold-back series (and their HELP/TYPE once).
        for line in text.lines() {
            let hold = line.contains("numapin_failover_holdback_bytes");
            if hold && (!line.starts_with('#') || !out.contains(line)) {
                out.push_str(line);
                out.push('\n');
            }
        }
    }
    out
}

/// Placement inventories of every host.
pub fn placement_inventories(fleet: &Fleet, h: &Holdback) -> serde_json::Value {
    numapin::fleet::placement::inventories(fleet, h)
}

/// This host's entries of a hold-back file: the `holdback` object of `numapin plan --holdback
/// --json` output (or that object alone).
pub fn read_holdback(path: &Path, snap: &Snapshot) -> Result<Vec<NodeHoldback>, CliError> {
    let bad = |what: String| numapin::Error::InvalidSnapshot {
        file: path.display().to_string(),
        field: "holdback".into(),
        what,
    };
    let text = std::fs::read(path).map_err(|e| bad(format!("cannot read it: {e}")))?;
    let v: serde_json::Value =
        serde_json::from_slice(&text).map_err(|e| bad(format!("not JSON: {e}")))?;
    let v = v.get("holdback").cloned().unwrap_or(v);
    let h: Holdback = serde_json::from_value(v).map_err(|e| {
        bad(format!(
            "not the output of `numapin plan --holdback --json`: {e}"
        ))
    })?;
    let mine: Vec<NodeHoldback> = h
        .nodes
        .into_iter()
        .filter(|e| e.host == snap.host && e.host_id == snap.host_id)
        .collect();
    if mine.is_empty() {
        return Err(bad(format!(
            "it has no entry for this host ({:?}, id {:?}); plan with this host's snapshot",
            snap.host, snap.host_id
        ))
        .into());
    }
    Ok(mine)
}

/// Writes `text` to `path` by writing a temporary file beside it and renaming it over `path`
/// (what the node exporter's textfile collector needs: it never sees a half-written file).
pub fn write_atomically(path: &Path, text: &str) -> Result<(), CliError> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path.file_name().ok_or_else(|| CliError::Output {
        path: path.to_path_buf(),
        what: "not a file name".into(),
    })?;
    let mut tmp = PathBuf::from(dir);
    tmp.push(format!(
        ".{}.{}.tmp",
        name.to_string_lossy(),
        std::process::id()
    ));
    let res = (|| -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    res.map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        CliError::Output {
            path: path.to_path_buf(),
            what: e.to_string(),
        }
    })
}
