//! `ipamctl export` and `ipamctl import`: the whole IPAM state as one versioned JSON document,
//! and back, between any two stores (sled to etcd, etcd to sled).
//!
//! ```text
//! {"format": "calico-ipam-export", "version": 1, "records": 42, "state": {"config": ..., "pools": [...],
//!  "nodes": [...], "blocks": [...], "affinities": [...], "handles": [...], "endpoints": [...],
//!  "index_chunks": [...], "pool_indexes": [...]}}
//! ```
//!
//! Import validates every record, checks the state's invariants in memory first (`--dry-run`
//! stops there), and refuses a target store that holds anything unless `--force`.

use super::output;
use crate::{CtlError, Outcome};
use clap::Args;
use ipam_core::{Datastore, Dump, Ipam};
use serde::{Deserialize, Serialize};
use serde_json::json;

/// The document's `format`.
pub const FORMAT: &str = "calico-ipam-export";
/// The document's `version`.
pub const VERSION: u32 = 1;

/// Arguments of `export`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Args, Serialize, Deserialize)]
pub struct ExportArgs {
    /// Write the document to this file (default: standard output).
    #[arg(long, short = 'f', value_name = "FILE")]
    pub file: Option<String>,
}

/// Arguments of `import`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Args, Serialize, Deserialize)]
pub struct ImportArgs {
    /// The document `export` wrote.
    pub file: String,
    /// Check the document and say what would happen; write nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Replace whatever the target store holds.
    #[arg(long)]
    pub force: bool,
    /// The document's text (read by the client, so the command can run in the node service).
    #[arg(skip)]
    pub document: Option<String>,
}

/// Runs `export`.
pub fn export<S: Datastore>(ipam: &Ipam<S>, a: &ExportArgs) -> Result<Outcome, CtlError> {
    let d = ipam.dump()?;
    let n = d.records().len();
    let doc = json!({"format": FORMAT, "version": VERSION, "records": n, "state": d});
    let text = serde_json::to_string_pretty(&doc).unwrap_or_default() + "\n";
    Ok(match &a.file {
        Some(f) => Outcome {
            stdout: format!("exported {n} records to {f}\n"),
            exit_code: crate::EXIT_OK,
            files: vec![(f.clone(), text)],
        },
        None => Outcome {
            stdout: text,
            exit_code: crate::EXIT_OK,
            files: Vec::new(),
        },
    })
}

/// Parses and checks a document: its format and version, every record's own rules, and the
/// invariants of the state as a whole (loaded into a memory store and audited).
pub fn parse(text: &str) -> Result<Dump, CtlError> {
    let v: serde_json::Value =
        serde_json::from_str(text).map_err(|e| CtlError::Usage(format!("not JSON: {e}")))?;
    if v["format"] != FORMAT {
        return Err(CtlError::Usage(format!(
            "not a {FORMAT} document (format {})",
            v["format"]
        )));
    }
    if v["version"] != VERSION {
        return Err(CtlError::Usage(format!(
            "document version {} is not {VERSION}, the one this build reads",
            v["version"]
        )));
    }
    let d: Dump = serde_json::from_value(v["state"].clone())
        .map_err(|e| CtlError::Usage(format!("the state does not decode: {e}")))?;
    d.validate()?;
    let mem = Ipam::new(
        ipam_store::MemoryStore::new(),
        std::sync::Arc::new(ipam_store::SystemClock),
    );
    mem.load(&d, false)?;
    let problems = mem.audit()?;
    if let Some(p) = problems.first() {
        return Err(CtlError::Usage(format!(
            "the document's state is inconsistent ({} problems; first: {})",
            problems.len(),
            super::check::describe(p)
        )));
    }
    Ok(d)
}

/// Runs `import`.
pub fn import<S: Datastore>(
    ipam: &Ipam<S>,
    a: &ImportArgs,
    json: bool,
) -> Result<Outcome, CtlError> {
    let text = a
        .document
        .as_deref()
        .ok_or_else(|| CtlError::Usage("import: the document was not read".into()))?;
    let d = parse(text)?;
    let n = d.records().len();
    let existing = ipam.dump()?.records().len();
    if a.dry_run {
        let verdict = if existing > 0 && !a.force {
            format!("would be refused: the target store holds {existing} records (use --force to replace them)")
        } else if existing > 0 {
            format!("would replace the target's {existing} records")
        } else {
            "would write into an empty store".to_string()
        };
        return Ok(output(
            json,
            format!(
                "{}: {n} records ({} pools, {} blocks, {} handles, {} endpoints), consistent; {verdict}\n",
                a.file,
                d.pools.len(),
                d.blocks.len(),
                d.handles.len(),
                d.endpoints.len()
            ),
            json!({"records": n, "consistent": true, "target_records": existing, "written": 0}),
        ));
    }
    let written = ipam.load(&d, a.force)?;
    Ok(output(
        json,
        format!("imported {written} records from {}\n", a.file),
        json!({"records": n, "written": written, "replaced": existing}),
    ))
}
