//! `ipamctl check`: every broken invariant, and a report of what can be released safely.
//!
//! The report carries each releasable address with its handle and the sequence number it was
//! allocated at, so `release --from-report` frees nothing that was re-used since.

use super::output;
use crate::{table, CtlError, Outcome};
use clap::Args;
use ipam_core::Problem;
use ipam_core::{Datastore, Ipam};
use serde::{Deserialize, Serialize};
use serde_json::json;

/// Arguments of `check`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Args, Serialize, Deserialize)]
pub struct CheckArgs {
    /// Write the report (JSON) to this file.
    #[arg(long, value_name = "FILE")]
    pub report: Option<String>,
    /// Addresses allocated less than this many seconds ago are not compared with the
    /// workload endpoints (an ADD in progress has its address before its endpoint).
    #[arg(long, default_value_t = 60)]
    #[serde(default = "default_grace")]
    pub grace_seconds: u64,
    /// Also report, as releasable, every address allocated more than this many seconds ago
    /// (for runtimes without GC: compare with what still runs before releasing).
    #[arg(long, value_name = "SECONDS")]
    #[serde(default)]
    pub older_than: Option<u64>,
}

fn default_grace() -> u64 {
    60
}

/// A finding beyond the store's own invariants: an allocation and the endpoints disagree.
struct EndpointFinding {
    kind: &'static str,
    detail: String,
    release: Option<serde_json::Value>,
}

/// Seconds since the Unix epoch of an RFC 3339 UTC timestamp as the plugin writes it.
fn parse_timestamp(t: &str) -> Option<u64> {
    let b = t.as_bytes();
    if b.len() != 20 || b[4] != b'-' || b[10] != b'T' || b[19] != b'Z' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| t.get(r)?.parse::<i64>().ok();
    let (y, m, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hh, mm, ss) = (num(11..13)?, num(14..16)?, num(17..19)?);
    // Days from the civil date (proleptic Gregorian).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    u64::try_from(days * 86_400 + hh * 3600 + mm * 60 + ss).ok()
}

/// Addresses allocated more than `age` seconds ago, by their timestamp attribute.
fn old_allocations<S: Datastore>(
    ipam: &Ipam<S>,
    age: u64,
) -> Result<Vec<EndpointFinding>, ipam_core::IpamError> {
    use ipam_core::Range;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let mut out = Vec::new();
    for b in ipam.blocks(&Range::Blocks)? {
        let b = b.value;
        for (o, holder, seq) in b.used() {
            let Some(t) = holder
                .get(ipam_cni::owner::attrs::TIMESTAMP)
                .and_then(parse_timestamp)
            else {
                continue;
            };
            if now.saturating_sub(t) <= age {
                continue;
            }
            let ip = b.ip(o);
            out.push(EndpointFinding {
                kind: "older-than-limit",
                detail: format!(
                    "{ip} (handle {}) was allocated {} s ago, more than {age} s",
                    holder.handle_id(),
                    now.saturating_sub(t)
                ),
                release: Some(
                    json!({"ip": ip.to_string(), "handle": holder.handle_id(), "seq": seq,
                                     "reason": format!("allocated more than {age} s ago")}),
                ),
            });
        }
    }
    Ok(out)
}

/// Allocations of networks wired by the `calico` main plugin whose attachment has no
/// endpoint (leak candidates, releasable), and endpoints whose addresses are not held.
fn endpoint_findings<S: Datastore>(
    ipam: &Ipam<S>,
    grace_seconds: u64,
) -> Result<Vec<EndpointFinding>, ipam_core::IpamError> {
    use ipam_cni::owner::{self, attrs};
    use ipam_core::Range;
    let endpoints = ipam.endpoints(None)?;
    let mut out = Vec::new();
    if endpoints.is_empty() {
        return Ok(out);
    }
    let networks: std::collections::BTreeSet<&str> =
        endpoints.iter().map(|e| e.network.as_str()).collect();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    for b in ipam.blocks(&Range::Blocks)? {
        let b = b.value;
        for (o, holder, seq) in b.used() {
            let a = ipam_core::Allocation {
                ip: b.ip(o),
                block: b.cidr,
                block_affinity: b.affinity.as_deref().map(str::to_string),
                handle_id: holder.handle_id().to_string(),
                attrs: holder.clone(),
                seq,
            };
            let Some(net) = owner::network_of(&a) else {
                continue;
            };
            if !networks.contains(net.as_str()) {
                continue;
            }
            let young = a
                .attrs
                .get(attrs::TIMESTAMP)
                .and_then(parse_timestamp)
                .is_some_and(|t| now.saturating_sub(t) < grace_seconds);
            if young {
                continue;
            }
            let (cid, ifname) = owner::attachment_of(&a);
            let wired = endpoints
                .iter()
                .any(|e| e.network == net && e.container_id == cid && e.ifname == ifname);
            if !wired {
                out.push(EndpointFinding {
                    kind: "address-without-endpoint",
                    detail: format!(
                        "{} is held by handle {} (network {net}, container {cid}, {ifname}), which has no workload endpoint",
                        a.ip, a.handle_id
                    ),
                    release: Some(json!({"ip": a.ip.to_string(), "handle": a.handle_id, "seq": seq,
                                         "reason": "no workload endpoint for its container"})),
                });
            }
        }
    }
    for e in &endpoints {
        for net in &e.addresses {
            let held = ipam.allocation(net.ip())?;
            if held.as_ref().is_none_or(|a| a.handle_id != e.handle_id) {
                out.push(EndpointFinding {
                    kind: "endpoint-without-address",
                    detail: format!(
                        "endpoint {} on {} lists {}, which {}",
                        e.id,
                        e.node,
                        net.ip(),
                        match held {
                            Some(a) => format!("is held by handle {}", a.handle_id),
                            None => "is not allocated".into(),
                        }
                    ),
                    release: None,
                });
            }
        }
    }
    Ok(out)
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
    let problems = ipam.audit()?;
    let mut release = Vec::new();
    for p in &problems {
        if let Problem::AddressWithoutHandle(ip, h) = p {
            if let Some(al) = ipam.allocation(*ip)? {
                release.push(json!({"ip": ip.to_string(), "handle": h, "seq": al.seq,
                                    "reason": "its handle does not exist"}));
            }
        }
    }
    let mut findings = endpoint_findings(ipam, a.grace_seconds)?;
    if let Some(age) = a.older_than {
        findings.extend(old_allocations(ipam, age)?);
    }
    for r in ipam.reservations()? {
        for h in super::reservation::held_inside(ipam, &r.cidr())? {
            findings.push(EndpointFinding {
                kind: "held-inside-reservation",
                detail: format!(
                    "{h} is inside reservation {} ({}); it keeps its holder, nothing new is handed out there",
                    r.name(), r.cidr()
                ),
                release: None,
            });
        }
    }
    release.extend(findings.iter().filter_map(|f| f.release.clone()));
    let mut listed: Vec<(String, String)> = problems
        .iter()
        .map(|p| (kind(p).to_string(), describe(p)))
        .collect();
    listed.extend(
        findings
            .iter()
            .map(|f| (f.kind.to_string(), f.detail.clone())),
    );
    let clean = listed.is_empty();
    let report = json!({
        "clean": clean,
        "problems": listed.iter().map(|(k, d)| json!({"kind": k, "detail": d})).collect::<Vec<_>>(),
        "release": release,
    });
    let rows: Vec<Vec<String>> = listed
        .iter()
        .map(|(k, d)| vec![k.clone(), d.clone()])
        .collect();
    let problems = &listed;
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
