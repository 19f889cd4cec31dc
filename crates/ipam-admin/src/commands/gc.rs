//! `ipamctl gc`: the CNI GC verb for operators.

use super::output;
use crate::{table, CtlError, Outcome};
use clap::Args;
use ipam_core::{Datastore, Ipam};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::collections::BTreeSet;

/// Arguments of `gc`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Args, Serialize, Deserialize)]
pub struct GcArgs {
    /// Network name (the handle prefix `<network>.`).
    #[arg(long)]
    pub network: String,
    /// JSON file: `[{"containerID": "...", "ifname": "..."}]`, the attachments to keep.
    #[arg(long, value_name = "FILE")]
    pub valid_attachments: String,
    /// The file's content (filled in by the client, which reads the file).
    #[arg(skip)]
    pub valid_json: Option<String>,
}

/// Runs `gc`.
pub fn run<S: Datastore>(ipam: &Ipam<S>, a: &GcArgs, json: bool) -> Result<Outcome, CtlError> {
    let text = match &a.valid_json {
        Some(t) => t.clone(),
        None => std::fs::read_to_string(&a.valid_attachments)
            .map_err(|e| CtlError::Usage(format!("cannot read {}: {e}", a.valid_attachments)))?,
    };
    let v: Value = serde_json::from_str(&text)
        .map_err(|e| CtlError::Usage(format!("{} is not JSON: {e}", a.valid_attachments)))?;
    let list = v
        .as_array()
        .ok_or_else(|| CtlError::Usage("valid attachments must be a JSON list".into()))?;
    let mut valid = BTreeSet::new();
    for e in list {
        match (
            e.get("containerID").and_then(Value::as_str),
            e.get("ifname").and_then(Value::as_str),
        ) {
            (Some(c), Some(i)) => {
                valid.insert((c.to_string(), i.to_string()));
            }
            _ => {
                return Err(CtlError::Usage(format!(
                    "attachment {e} needs containerID and ifname"
                )))
            }
        }
    }
    let r = ipam_cni::handler::gc_network(ipam, &a.network, &valid)
        .map_err(|e| CtlError::Usage(e.to_string()))?;
    let rows: Vec<Vec<String>> = r
        .released
        .iter()
        .map(|(h, ip)| vec![ip.to_string(), h.clone()])
        .collect();
    let mut text = format!(
        "released {} addresses of network {}\n",
        r.released.len(),
        a.network
    );
    if !rows.is_empty() {
        text.push_str(&table::render(&["ADDRESS", "HANDLE"], &rows));
    }
    for e in &r.errors {
        text.push_str(&format!("error: {e}\n"));
    }
    let mut o = output(
        json,
        text,
        json!({"released": r.released.iter().map(|(h, ip)| json!({"ip": ip.to_string(), "handle": h})).collect::<Vec<_>>(),
               "errors": r.errors}),
    );
    if !r.errors.is_empty() {
        o.exit_code = crate::EXIT_PROBLEMS;
    }
    Ok(o)
}
