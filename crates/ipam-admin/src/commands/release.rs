//! `ipamctl release`: one address, or every address a check report lists, each guarded by its
//! handle and sequence number so that an address re-used since is left alone.

use super::output;
use crate::{table, CtlError, Outcome};
use clap::Args;
use ipam_core::{Datastore, Ipam, ReleaseError, ReleaseRequest};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::net::IpAddr;

/// Arguments of `release`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Args, Serialize, Deserialize)]
pub struct ReleaseArgs {
    /// The address to release.
    #[arg(
        long,
        conflicts_with = "from_report",
        required_unless_present = "from_report"
    )]
    pub ip: Option<IpAddr>,
    /// Release only if held by this handle.
    #[arg(long, requires = "ip")]
    pub handle: Option<String>,
    /// Release only if allocated at this sequence number.
    #[arg(long, requires = "ip")]
    pub seq: Option<u64>,
    /// A report written by `check --report`.
    #[arg(long, value_name = "FILE")]
    pub from_report: Option<String>,
    /// The report's content (filled in by the client, which reads the file).
    #[arg(skip)]
    pub report_json: Option<String>,
}

/// Runs `release`.
pub fn run<S: Datastore>(ipam: &Ipam<S>, a: &ReleaseArgs, json: bool) -> Result<Outcome, CtlError> {
    let reqs: Vec<ReleaseRequest> = if let Some(ip) = a.ip {
        vec![ReleaseRequest {
            ip,
            handle_id: a.handle.clone(),
            seq: a.seq,
            block: None,
        }]
    } else {
        let path = a.from_report.clone().unwrap_or_default();
        let text = match &a.report_json {
            Some(t) => t.clone(),
            None => std::fs::read_to_string(&path)
                .map_err(|e| CtlError::Usage(format!("cannot read {path}: {e}")))?,
        };
        let v: Value = serde_json::from_str(&text)
            .map_err(|e| CtlError::Usage(format!("{path} is not a check report: {e}")))?;
        let items = v["release"]
            .as_array()
            .ok_or_else(|| CtlError::Usage(format!("{path} has no \"release\" list")))?;
        items
            .iter()
            .map(|i| {
                let ip = i["ip"].as_str().and_then(|s| s.parse().ok());
                let seq = i["seq"].as_u64();
                match (ip, seq) {
                    (Some(ip), Some(seq)) => Ok(ReleaseRequest {
                        ip,
                        handle_id: i["handle"].as_str().map(String::from),
                        seq: Some(seq),
                        block: None,
                    }),
                    _ => Err(CtlError::Usage(format!(
                        "report entry {i} needs ip and seq"
                    ))),
                }
            })
            .collect::<Result<_, _>>()?
    };
    let out = ipam.release_ips(&reqs)?;
    let mut rows: Vec<Vec<String>> = out
        .released
        .iter()
        .map(|ip| vec![ip.to_string(), "released".into(), String::new()])
        .collect();
    let mut skipped = Vec::new();
    for ip in &out.not_allocated {
        rows.push(vec![
            ip.to_string(),
            "skipped".into(),
            "not allocated".into(),
        ]);
        skipped.push(json!({"ip": ip.to_string(), "reason": "not allocated"}));
    }
    for (ip, e) in &out.refused {
        let why = match e {
            ReleaseError::StaleSequence { .. } => format!("re-used since the report: {e}"),
            other => other.to_string(),
        };
        rows.push(vec![ip.to_string(), "skipped".into(), why.clone()]);
        skipped.push(json!({"ip": ip.to_string(), "reason": why}));
    }
    let mut o = output(
        json,
        table::render(&["ADDRESS", "RESULT", "WHY"], &rows),
        json!({"released": out.released.iter().map(|i| i.to_string()).collect::<Vec<_>>(), "skipped": skipped}),
    );
    if !skipped.is_empty() {
        o.exit_code = crate::EXIT_PROBLEMS;
    }
    Ok(o)
}
