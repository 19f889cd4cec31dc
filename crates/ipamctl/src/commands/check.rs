//! `ipamctl check`: every broken invariant, and a report of what can be released safely.
//!
//! The report carries each releasable address with its handle and the sequence number it was
//! allocated at, so `release --from-report` frees nothing that was re-used since.

use super::output;
use crate::{table, CtlError, Outcome};
use clap::Args;
use ipam_core::audit::{audit, Problem};
use ipam_core::{Datastore, Ipam};
use serde::{Deserialize, Serialize};
use serde_json::json;

/// Arguments of `check`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Args, Serialize, Deserialize)]
pub struct CheckArgs {
    /// Write the report (JSON) to this file.
    #[arg(long, value_name = "FILE")]
    pub report: Option<String>,
}

/// The kind of a problem, as a short name.
pub fn kind(p: &Problem) -> &'static str {
    match p {
        Problem::OverlappingBlocks(..) => "overlapping-blocks",
        Problem::BlockOutsidePools(_) => "block-outside-pools",
        Problem::BlockMisaligned(_) => "block-misaligned",
        Problem::BlockInvalid(..) => "block-invalid",
        Problem::AddressWithoutHandle(..) => "address-without-handle",
        Problem::HandleCountMismatch { actual: 0, .. } => "handle-without-addresses",
        Problem::HandleCountMismatch { .. } => "handle-count-mismatch",
        Problem::EmptyHandle(_) => "handle-without-addresses",
        Problem::AffinityWithoutBlock(..) => "affinity-without-block",
        Problem::BlockWithoutAffinity(..) => "block-without-affinity",
        Problem::UnconfirmedAffinity(..) => "stale-pending-affinity",
        Problem::IndexMismatch { .. } => "claim-index-mismatch",
        Problem::FullChunkMismatch(..) => "claim-index-mismatch",
        Problem::Corrupt { .. } => "record-does-not-decode",
    }
}

/// A readable description.
pub fn describe(p: &Problem) -> String {
    match p {
        Problem::OverlappingBlocks(a, b) => {
            format!("blocks {a} and {b} overlap (addresses held twice)")
        }
        Problem::BlockOutsidePools(b) => {
            format!("block {b} is in no pool (addresses outside every pool)")
        }
        Problem::BlockMisaligned(b) => format!("block {b} does not have its pool's block size"),
        Problem::BlockInvalid(b, why) => format!("block {b} is inconsistent: {why}"),
        Problem::AddressWithoutHandle(ip, h) => {
            format!("{ip} is held by handle {h}, which does not exist")
        }
        Problem::HandleCountMismatch {
            handle,
            block,
            recorded,
            actual,
        } => {
            format!(
                "handle {handle} counts {recorded} addresses in {block}, the block holds {actual}"
            )
        }
        Problem::EmptyHandle(h) => format!("handle {h} holds no address"),
        Problem::AffinityWithoutBlock(n, c) => {
            format!("node {n}'s affinity for {c} has no matching block")
        }
        Problem::BlockWithoutAffinity(c, n) => {
            format!("block {c} names node {n}, which has no affinity record for it")
        }
        Problem::UnconfirmedAffinity(n, c, s) => {
            format!("affinity {n} -> {c} is stuck in state {s:?}")
        }
        Problem::IndexMismatch {
            pool,
            block,
            indexed,
        } => format!(
            "claim index of {pool} says block {block} is {}",
            if *indexed {
                "claimed, but it does not exist"
            } else {
                "free, but it exists"
            }
        ),
        Problem::FullChunkMismatch(pool, c) => {
            format!("claim index of {pool}: chunk {c} marked full wrongly")
        }
        Problem::Corrupt { key, reason } => format!("{key} does not decode: {reason}"),
    }
}

/// Runs `check`.
pub fn run<S: Datastore>(ipam: &Ipam<S>, a: &CheckArgs, json: bool) -> Result<Outcome, CtlError> {
    let problems = audit(ipam.store()).map_err(ipam_core::IpamError::from)?;
    let mut release = Vec::new();
    for p in &problems {
        if let Problem::AddressWithoutHandle(ip, h) = p {
            if let Some(al) = ipam.allocation(*ip)? {
                release.push(json!({"ip": ip.to_string(), "handle": h, "seq": al.seq,
                                    "reason": "its handle does not exist"}));
            }
        }
    }
    let report = json!({
        "clean": problems.is_empty(),
        "problems": problems.iter().map(|p| json!({"kind": kind(p), "detail": describe(p)})).collect::<Vec<_>>(),
        "release": release,
    });
    let rows: Vec<Vec<String>> = problems
        .iter()
        .map(|p| vec![kind(p).to_string(), describe(p)])
        .collect();
    let text = if problems.is_empty() {
        "no problems found\n".to_string()
    } else {
        format!(
            "{} problems found ({} addresses releasable with release --from-report)\n{}",
            problems.len(),
            release.len(),
            table::render(&["KIND", "DETAIL"], &rows)
        )
    };
    let mut o = output(json, text, report.clone());
    if let Some(path) = &a.report {
        o.files.push((
            path.clone(),
            serde_json::to_string_pretty(&report).unwrap_or_default(),
        ));
    }
    if !problems.is_empty() {
        o.exit_code = crate::EXIT_PROBLEMS;
    }
    Ok(o)
}
