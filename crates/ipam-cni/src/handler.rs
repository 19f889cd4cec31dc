//! The CNI verbs over an [`Ipam`]: the same code serves the plugin's own process and the node
//! service.

use crate::config::PluginConfig;
use crate::env::{CniEnv, Command};
use crate::error::CniError;
use crate::owner;
use crate::result;
use ipam_core::{
    AdminError, AssignError, AssignIpArgs, AssignedIp, AutoAssignArgs, Datastore, HostReserved,
    Ipam, Pool, ReleaseRequest,
};
use ipnetwork::IpNetwork;
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::Arc;

pub use crate::owner::attrs;

/// One parsed invocation.
#[derive(Clone, Debug)]
pub struct Invocation {
    /// The environment.
    pub env: CniEnv,
    /// The configuration.
    pub config: PluginConfig,
}

/// Runs the verb. Returns the JSON to print (ADD), or nothing.
pub fn handle<S: Datastore>(
    ipam: &Ipam<S>,
    inv: &Invocation,
    now_unix_secs: u64,
) -> Result<Option<String>, CniError> {
    match inv.env.command {
        Command::Add => add(ipam, inv, now_unix_secs).map(Some),
        Command::Del => del(ipam, inv).map(|()| None),
        Command::Check => check(ipam, inv).map(|()| None),
        Command::Gc => gc(ipam, inv).map(|()| None),
        Command::Status => status(ipam, inv).map(|()| None),
        Command::Version => Ok(Some(version_json(&inv.config.cni_version))),
    }
}

/// The VERSION answer.
pub fn version_json(cni_version: &str) -> String {
    let v = if cni_version.is_empty() {
        "1.1.0"
    } else {
        cni_version
    };
    serde_json::json!({
        "cniVersion": v,
        "supportedVersions": crate::config::SUPPORTED_VERSIONS,
    })
    .to_string()
}

/// Creates the configured pools (or the default) when the store has none yet. Returns the
/// pools' CIDRs (for the result's prefix).
fn ensure_pools<S: Datastore>(
    ipam: &Ipam<S>,
    cfg: &PluginConfig,
) -> Result<Vec<IpNetwork>, CniError> {
    let existing: Vec<IpNetwork> = ipam.pools()?.into_iter().map(|p| p.cidr()).collect();
    if !existing.is_empty() {
        return Ok(existing);
    }
    let mut cidrs: Vec<IpNetwork> = cfg
        .ipv4_pools
        .iter()
        .chain(&cfg.ipv6_pools)
        .filter_map(ipam_core::PoolRef::cidr)
        .collect();
    if cfg.assign_ipv4 && cfg.ipv4_pools.is_empty() {
        cidrs.push("192.168.0.0/16".parse().expect("valid"));
    }
    for c in cidrs {
        let pool = Pool::new(&Pool::name_for(&c), ipam_core::cidr::masked(c))
            .map_err(|e| CniError::config(e.to_string()))?;
        match ipam.create_pool(pool) {
            Ok(()) | Err(AdminError::PoolExists(_)) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(ipam.pools()?.into_iter().map(|p| p.cidr()).collect())
}

/// `secs` since the Unix epoch as RFC 3339 (UTC).
pub(crate) fn rfc3339(secs: u64) -> String {
    let days = secs / 86_400;
    let rem = secs % 86_400;
    // Civil date from days since 1970-01-01 (proleptic Gregorian).
    let z = i64::try_from(days).unwrap_or(0) + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

fn owner_attrs(inv: &Invocation, now: u64) -> BTreeMap<String, String> {
    let mut a = BTreeMap::from([
        (attrs::NETWORK.to_string(), inv.config.name.clone()),
        (
            attrs::CONTAINER_ID.to_string(),
            inv.env.container_id.clone(),
        ),
        (attrs::IFNAME.to_string(), inv.env.ifname.clone()),
        (attrs::TIMESTAMP.to_string(), rfc3339(now)),
    ]);
    if let Some(ns) = inv.env.args.get("K8S_POD_NAMESPACE") {
        a.insert(attrs::NAMESPACE.into(), ns.into());
    }
    if let Some(p) = inv.env.args.get("K8S_POD_NAME") {
        a.insert(attrs::POD.into(), p.into());
    }
    a
}

/// Addresses of this attachment: those of its handle (and of the handle stores written before
/// the network name was escaped) whose attributes name this network, container and ifname.
fn attachment<S: Datastore>(
    ipam: &Ipam<S>,
    inv: &Invocation,
) -> Result<Vec<ipam_core::Allocation>, CniError> {
    held_by(ipam, inv, false)
}

/// The attachment's addresses ([`attachment`]), and with `workload` also what it holds under
/// Calico's older `<namespace>.<pod>` handle: all handles in one read, their blocks in one
/// more.
fn held_by<S: Datastore>(
    ipam: &Ipam<S>,
    inv: &Invocation,
    workload: bool,
) -> Result<Vec<ipam_core::Allocation>, CniError> {
    let handles = Handles::of(inv, workload);
    Ok(ipam
        .allocations_of_handles(&handles.ids())?
        .into_iter()
        .filter(|a| handles.selects(a))
        .collect())
}

/// The handles an attachment's addresses may be under: its own (and the form written before
/// the network name was escaped), and with `workload` its pod's older `<namespace>.<pod>`;
/// with what tells the attachment's addresses among theirs (owned, so a release may hand the
/// choice to the caller that serves it, see `Ipam::release_held`).
struct Handles {
    own: Vec<String>,
    pod: Option<String>,
    network: String,
    container_id: String,
    ifname: String,
    namespace: Option<String>,
    pod_name: Option<String>,
}

impl Handles {
    fn of(inv: &Invocation, workload: bool) -> Handles {
        let (net, cid) = (&inv.config.name, &inv.env.container_id);
        let mut own = vec![owner::handle_id(net, cid)];
        own.extend(owner::legacy_handle_id(net, cid));
        let pod = workload
            .then(|| workload_handle(inv))
            .flatten()
            .filter(|h| !own.contains(h)); // read as this attachment's own handle already
        Handles {
            own,
            pod,
            network: net.clone(),
            container_id: cid.clone(),
            ifname: inv.env.ifname.clone(),
            namespace: inv.env.args.get("K8S_POD_NAMESPACE").map(String::from),
            pod_name: inv.env.args.get("K8S_POD_NAME").map(String::from),
        }
    }

    fn ids(&self) -> Vec<&str> {
        self.own
            .iter()
            .chain(&self.pod)
            .map(String::as_str)
            .collect()
    }

    /// Whether `a`, under one of these handles, is this attachment's.
    fn selects(&self, a: &ipam_core::Allocation) -> bool {
        if self.own.contains(&a.handle_id) {
            owner::belongs(a, &self.network, &self.container_id, &self.ifname)
        } else {
            self.belongs_to_pod(a)
        }
    }

    /// Whether an address under the `<namespace>.<pod>` handle is this attachment's: every
    /// owner attribute it carries names this container, network, ifname and pod.
    fn belongs_to_pod(&self, a: &ipam_core::Allocation) -> bool {
        let get = |k: &str| a.attrs.get(k);
        get(attrs::CONTAINER_ID).is_none_or(|c| c == self.container_id)
            && get(attrs::NETWORK).is_none_or(|n| n == self.network)
            && get(attrs::IFNAME).is_none_or(|i| i == self.ifname)
            && get(attrs::NAMESPACE).is_none_or(|n| Some(n) == self.namespace.as_deref())
            && get(attrs::POD).is_none_or(|p| Some(p) == self.pod_name.as_deref())
    }
}

/// Specific addresses asked for: `runtimeConfig.ips` / `args.cni.ips`, else `CNI_ARGS IP=`.
fn requested_ips(inv: &Invocation) -> Result<Vec<IpAddr>, CniError> {
    let mut specific = inv.config.requested_ips.clone();
    if specific.is_empty() {
        if let Some(list) = inv.env.args.get("IP") {
            for s in list.split(',') {
                specific.push(s.trim().parse::<IpAddr>().map_err(|_| {
                    CniError::Env(format!("IP={} is not an address", crate::env::shown(s)))
                })?);
            }
        }
    }
    let mut seen = BTreeSet::new();
    specific.retain(|ip| seen.insert(*ip));
    Ok(specific)
}

fn assigned(a: &ipam_core::Allocation) -> AssignedIp {
    AssignedIp {
        ip: a.ip,
        block: a.block,
        seq: a.seq,
    }
}

fn add<S: Datastore>(ipam: &Ipam<S>, inv: &Invocation, now: u64) -> Result<String, CniError> {
    let cfg = &inv.config;
    let node = cfg.node_name()?;
    let handle = cfg.handle_id(&inv.env.container_id);
    let specific = requested_ips(inv)?;
    if specific.is_empty() {
        return auto_add(ipam, inv, now, &node, &handle);
    }
    let pools = ensure_pools(ipam, cfg)?;
    let held = attachment(ipam, inv)?;
    // Specific addresses: those this attachment already holds are kept, the missing ones are
    // assigned to the same handle (a main plugin may ask once per address), all or nothing.
    let missing: Vec<AssignIpArgs> = specific
        .iter()
        .filter(|ip| !held.iter().any(|a| a.ip == **ip))
        .map(|ip| AssignIpArgs {
            ip: *ip,
            handle_id: handle.clone(),
            attrs: owner_attrs(inv, now),
            node: node.clone(),
            host_reserved: host_reserved(cfg),
        })
        .collect();
    let fresh = ipam.assign_ips(&missing)?;
    if !fresh.is_empty() {
        tracing::info!(handle = %handle, node = %node, ips = ?fresh.iter().map(|a| a.ip).collect::<Vec<_>>(), "assigned");
    }
    let ips: Vec<AssignedIp> = specific
        .iter()
        .filter_map(|ip| {
            fresh
                .iter()
                .find(|a| a.ip == *ip)
                .cloned()
                .or_else(|| held.iter().find(|a| a.ip == *ip).map(assigned))
        })
        .collect();
    Ok(result::to_json(cfg, result::build(cfg, &ips, &pools)))
}

/// ADD of automatically chosen addresses. Most ADDs are a new attachment, so the engine is
/// asked straight away to assign only if the handle holds nothing (it reads the handle with
/// the rest of the request, or, from the node's kept context, creates it, so a held handle
/// fails the commit and is then read): one read and one commit, or just the commit. Only when the handle holds addresses is
/// the attachment read: a repeated ADD returns what it holds; another interface of the same
/// container (same handle, other ifname) is then assigned its own. A store without pools gets
/// the configured (or default) pools and one more try.
fn auto_add<S: Datastore>(
    ipam: &Ipam<S>,
    inv: &Invocation,
    now: u64,
    node: &str,
    handle: &str,
) -> Result<String, CniError> {
    let cfg = &inv.config;
    let mut args = AutoAssignArgs {
        num_v4: usize::from(cfg.assign_ipv4),
        num_v6: usize::from(cfg.assign_ipv6),
        attrs: owner_attrs(inv, now),
        v4_pools: cfg.ipv4_pools.clone(),
        v6_pools: cfg.ipv6_pools.clone(),
        host_reserved: host_reserved(cfg),
        only_if_unheld: true,
        ..AutoAssignArgs::v4(node, handle, 0)
    };
    // A network name with `.` or `%` may have left addresses under the handle form written
    // before the escape, which the engine's read does not see: read the attachment first.
    if owner::legacy_handle_id(&cfg.name, &inv.env.container_id).is_some() {
        let held = attachment(ipam, inv)?;
        if !held.is_empty() {
            return held_result(ipam, cfg, &held);
        }
    }
    let mut pools_ensured = false;
    loop {
        match ipam.auto_assign(&args) {
            Ok(r) => {
                let pools: Vec<IpNetwork> = r.v4.pools.iter().chain(&r.v6.pools).copied().collect();
                let ips: Vec<AssignedIp> = r.v4.ips.into_iter().chain(r.v6.ips).collect();
                tracing::info!(handle = %handle, node = %node, ips = ?ips.iter().map(|a| a.ip).collect::<Vec<_>>(), "assigned");
                return Ok(result::to_json(cfg, result::build(cfg, &ips, &pools)));
            }
            Err(AssignError::HandleHolds(_)) => {
                let held = attachment(ipam, inv)?;
                if !held.is_empty() {
                    return held_result(ipam, cfg, &held);
                }
                args.only_if_unheld = false;
            }
            Err(AssignError::NoPools { .. } | AssignError::UnknownPool(_)) if !pools_ensured => {
                pools_ensured = true;
                ensure_pools(ipam, cfg)?;
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// The result of a repeated ADD: what the attachment already holds.
fn held_result<S: Datastore>(
    ipam: &Ipam<S>,
    cfg: &PluginConfig,
    held: &[ipam_core::Allocation],
) -> Result<String, CniError> {
    let pools = ensure_pools(ipam, cfg)?;
    let ips: Vec<AssignedIp> = held.iter().map(assigned).collect();
    Ok(result::to_json(cfg, result::build(cfg, &ips, &pools)))
}

fn host_reserved(cfg: &PluginConfig) -> HostReserved {
    HostReserved {
        first: cfg.reserve.0,
        last: cfg.reserve.1,
    }
}

/// Calico's older handle form, `<namespace>.<pod>`, when the runtime names the pod: DEL also
/// frees what this attachment holds there, so addresses written under it are not leaked.
fn workload_handle(inv: &Invocation) -> Option<String> {
    let ns = inv.env.args.get("K8S_POD_NAMESPACE")?;
    let pod = inv.env.args.get("K8S_POD_NAME")?;
    Some(format!("{ns}.{pod}"))
}

/// DEL: what the attachment holds, released from one read of its handles (and of their block
/// unless the node service keeps it) in one commit.
fn del<S: Datastore>(ipam: &Ipam<S>, inv: &Invocation) -> Result<(), CniError> {
    let handles = Arc::new(Handles::of(inv, true));
    let choice = Arc::clone(&handles);
    let released = ipam.release_held(&handles.ids(), move |a| choice.selects(a))?;
    if !released.is_empty() {
        tracing::info!(container = %inv.env.container_id, released = ?released, "released");
    }
    Ok(())
}

fn check<S: Datastore>(ipam: &Ipam<S>, inv: &Invocation) -> Result<(), CniError> {
    let mine: BTreeSet<IpAddr> = attachment(ipam, inv)?.into_iter().map(|a| a.ip).collect();
    if mine.is_empty() {
        return Err(CniError::UnknownContainer(format!(
            "no address is held for container {} interface {}",
            inv.env.container_id, inv.env.ifname
        )));
    }
    for ip in &inv.config.prev_result_ips {
        if !mine.contains(ip) {
            return Err(CniError::CheckMismatch(format!(
                "prevResult has {ip}, but container {} interface {} holds {:?}",
                inv.env.container_id, inv.env.ifname, mine
            )));
        }
    }
    Ok(())
}

fn gc<S: Datastore>(ipam: &Ipam<S>, inv: &Invocation) -> Result<(), CniError> {
    let cfg = &inv.config;
    let valid: BTreeSet<(String, String)> = cfg
        .valid_attachments
        .clone()
        .ok_or_else(|| CniError::config("GC needs cni.dev/valid-attachments"))?
        .into_iter()
        .collect();
    let report = gc_network(ipam, &cfg.name, &valid)?;
    tracing::info!(network = %cfg.name, released = report.released.len(), "gc");
    if report.errors.is_empty() {
        Ok(())
    } else {
        Err(CniError::io(
            "garbage collection incomplete",
            report.errors.join("; "),
        ))
    }
}

/// What a garbage collection did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GcReport {
    /// (handle, address) released.
    pub released: Vec<(String, IpAddr)>,
    /// Failures, one line each; the collection went on past them.
    pub errors: Vec<String>,
}

/// Releases every address of network `network` whose (container id, ifname) is not in `valid`
/// (the CNI GC verb; `ipamctl gc` runs it too). Goes on past individual failures.
pub fn gc_network<S: Datastore>(
    ipam: &Ipam<S>,
    network: &str,
    valid: &BTreeSet<(String, String)>,
) -> Result<GcReport, CniError> {
    let mut report = GcReport::default();
    let mut prefixes = vec![owner::handle_prefix(network)];
    let legacy = format!("{network}.");
    if legacy != prefixes[0] {
        prefixes.push(legacy);
    }
    let mut handles = BTreeSet::new();
    for p in &prefixes {
        handles.extend(ipam.handle_ids(p)?);
    }
    for h in handles {
        let allocs = match ipam.allocations_of_handle(&h) {
            Ok(a) => a,
            Err(e) => {
                report.errors.push(format!("{h}: {e}"));
                continue;
            }
        };
        // Only this network's allocations: a handle prefix alone may match another network's
        // handles written before the escape (network "a" and "a.b").
        let stale: Vec<ReleaseRequest> = allocs
            .iter()
            .filter(|a| owner::network_of(a).as_deref() == Some(network))
            .filter(|a| {
                let (cid, ifn) = owner::attachment_of(a);
                !valid.contains(&(cid.to_string(), ifn.to_string()))
            })
            .map(|a| ReleaseRequest {
                block: Some(a.block),
                ..ReleaseRequest::guarded(a.ip, &h, a.seq)
            })
            .collect();
        if stale.is_empty() {
            continue;
        }
        match ipam.release_ips(&stale) {
            Ok(o) => report
                .released
                .extend(o.released.into_iter().map(|ip| (h.clone(), ip))),
            Err(e) => report.errors.push(format!("{h}: {e}")),
        }
    }
    Ok(report)
}

/// STATUS: ready when an ADD for this node would get its addresses now (the same pools,
/// node selectors, strict affinity and block cap as the assignment).
fn status<S: Datastore>(ipam: &Ipam<S>, inv: &Invocation) -> Result<(), CniError> {
    let cfg = &inv.config;
    ipam.writable().map_err(|e| CniError::NotAvailable {
        what: String::from("datastore cannot be written"),
        details: format!("an ADD would fail now: {e}"),
    })?;
    if ipam.pools()?.is_empty() {
        return Ok(()); // the first ADD creates them
    }
    let node = cfg.node_name()?;
    let args = AutoAssignArgs {
        num_v4: usize::from(cfg.assign_ipv4),
        num_v6: usize::from(cfg.assign_ipv6),
        v4_pools: cfg.ipv4_pools.clone(),
        v6_pools: cfg.ipv6_pools.clone(),
        ..AutoAssignArgs::v4(&node, "status", 0)
    };
    ipam.readiness(&args).map_err(|e| CniError::NotAvailable {
        what: String::from("no addresses available"),
        details: format!("an ADD on node {node} would fail now: {e}"),
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn timestamps_are_rfc3339() {
        assert_eq!(super::rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(super::rfc3339(1_795_700_000), "2026-11-26T13:33:20Z");
        assert_eq!(super::rfc3339(951_782_400), "2000-02-29T00:00:00Z");
    }
}
