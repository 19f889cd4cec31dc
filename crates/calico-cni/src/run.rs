//! One invocation from environment and stdin to stdout and exit code.

use crate::config::MainConfig;
use crate::dataplane::{self, Netns};
use crate::delegate;
use crate::naming;
use crate::result::{self, Attachment};
use ipam_cni::endpoints;
use ipam_cni::env::{CniEnv, Command};
use ipam_cni::error::CniError;
use ipam_cni::owner;
use ipam_cni::protocol::EndpointOp;
use ipam_core::endpoint_id;
use ipam_core::Endpoint;
use serde_json::Value;
use std::collections::BTreeMap;
use std::net::IpAddr;

/// What the plugin prints and how it exits.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Output {
    /// Printed on stdout.
    pub stdout: String,
    /// Process exit code.
    pub exit_code: i32,
}

/// The `cniVersion` to report errors under.
fn reported_version(stdin: &[u8]) -> String {
    serde_json::from_slice::<Value>(stdin)
        .ok()
        .and_then(|v| {
            v.get("cniVersion")
                .and_then(Value::as_str)
                .map(String::from)
        })
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "1.1.0".into())
}

/// The plugin's entry point.
pub fn run(env: &BTreeMap<String, String>, stdin: &[u8]) -> Output {
    match serve(env, stdin) {
        Ok(stdout) => Output {
            stdout,
            exit_code: 0,
        },
        Err(e) => Output {
            stdout: e.to_json(&reported_version(stdin)),
            exit_code: 1,
        },
    }
}

/// One attachment's identity, derived once.
struct Ctx<'a> {
    env: &'a BTreeMap<String, String>,
    stdin: &'a [u8],
    cni: CniEnv,
    cfg: MainConfig,
}

impl Ctx<'_> {
    fn pod(&self) -> Option<(&str, &str)> {
        Some((
            self.cni.args.get("K8S_POD_NAMESPACE")?,
            self.cni.args.get("K8S_POD_NAME")?,
        ))
    }

    fn host_ifname(&self) -> String {
        naming::host_ifname(self.pod(), &self.cni.container_id, &self.cni.ifname)
    }

    fn handle_id(&self) -> String {
        owner::handle_id(&self.cfg.name, &self.cni.container_id)
    }

    fn endpoint_key(&self) -> Result<(String, String), CniError> {
        Ok((
            self.cfg.store.node_name()?,
            endpoint_id(&self.handle_id(), &self.cni.ifname),
        ))
    }

    fn ipam(&self, verb: &str) -> Result<String, CniError> {
        delegate::exec(&self.cfg.ipam_type, verb, self.env, self.stdin)
    }

    /// Gives back the addresses after a failed ADD; a failure to do so is added to `e`.
    fn undo_ipam(&self, e: CniError) -> CniError {
        match self.ipam("DEL") {
            Ok(_) => e,
            Err(u) => {
                let details = format!(
                    "{} (and releasing its addresses failed: {})",
                    e.details(),
                    u.details()
                );
                e.with_details(details)
            }
        }
    }
}

fn serve(env: &BTreeMap<String, String>, stdin: &[u8]) -> Result<String, CniError> {
    let cni = CniEnv::from_map(env)?;
    if cni.command == Command::Version {
        let v = MainConfig::parse(stdin, Command::Version)
            .map(|c| c.cni_version)
            .unwrap_or_default();
        return Ok(ipam_cni::handler::version_json(&v));
    }
    let cfg = MainConfig::parse(stdin, cni.command)?;
    let ctx = Ctx {
        env,
        stdin,
        cni,
        cfg,
    };
    match ctx.cni.command {
        Command::Add => add(&ctx),
        Command::Del => del(&ctx).map(|()| String::new()),
        Command::Check => check(&ctx).map(|()| String::new()),
        Command::Gc => ctx.ipam("GC").map(|_| String::new()),
        Command::Status => ctx.ipam("STATUS").map(|_| String::new()),
        Command::Version => Ok(ipam_cni::handler::version_json(&ctx.cfg.cni_version)),
    }
}

fn add(ctx: &Ctx<'_>) -> Result<String, CniError> {
    // Checks that cannot fail later come first, so a bad call allocates nothing.
    let netns = Netns::open(&ctx.cni.netns)?;
    dataplane::ensure_free(&netns, &ctx.cni.ifname)?;
    let (node, id) = ctx.endpoint_key()?;
    let ipam_result = ctx.ipam("ADD")?;
    let ips: Vec<IpAddr> = match delegate::addresses(&ipam_result) {
        Ok(a) => a.into_iter().map(|a| a.ip).collect(),
        Err(e) => return Err(ctx.undo_ipam(e)),
    };
    let host_if = ctx.host_ifname();
    let wired = match dataplane::add(&netns, &host_if, &ctx.cni.ifname, ctx.cfg.mtu, &ips) {
        Ok(w) => w,
        Err(e) => return Err(ctx.undo_ipam(e)),
    };
    let pod = ctx.pod();
    let endpoint = Endpoint {
        node,
        id,
        network: ctx.cfg.name.clone(),
        container_id: ctx.cni.container_id.clone(),
        ifname: ctx.cni.ifname.clone(),
        handle_id: ctx.handle_id(),
        namespace: pod.map(|p| p.0.to_string()),
        pod: pod.map(|p| p.1.to_string()),
        host_ifname: host_if.clone(),
        mac: wired.pod_mac.clone(),
        addresses: ips
            .iter()
            .map(|ip| ipnetwork::IpNetwork::from(*ip))
            .collect(),
    };
    if let Err(e) = endpoints::call(&ctx.cfg.store, &EndpointOp::Put(Box::new(endpoint))) {
        let e = match dataplane::del(&host_if) {
            Ok(()) => e,
            Err(u) => {
                let details = format!("{} (and {})", e.details(), u.details());
                e.with_details(details)
            }
        };
        return Err(ctx.undo_ipam(e));
    }
    let r = result::build(&Attachment {
        cni_version: &ctx.cfg.cni_version,
        host: (&wired.host_ifname, &wired.host_mac),
        pod: (&ctx.cni.ifname, &wired.pod_mac),
        sandbox: &ctx.cni.netns,
        ips: &ips,
        dns: ctx.cfg.dns.as_ref(),
    });
    Ok(r.to_string())
}

/// Undoes everything, going on past failures; the first failure is returned at the end.
fn del(ctx: &Ctx<'_>) -> Result<(), CniError> {
    let mut first: Option<CniError> = None;
    let mut keep = |r: Result<(), CniError>| {
        if let Err(e) = r {
            first.get_or_insert(e);
        }
    };
    let key = ctx.endpoint_key();
    let recorded = match &key {
        Ok((node, id)) => endpoints::call(
            &ctx.cfg.store,
            &EndpointOp::Get {
                node: node.clone(),
                id: id.clone(),
            },
        )
        .ok()
        .flatten(),
        Err(_) => None,
    };
    // The recorded host end wins: the runtime may not repeat the pod's names on DEL.
    let host_if = recorded
        .as_ref()
        .map(|e| e.host_ifname.clone())
        .unwrap_or_else(|| ctx.host_ifname());
    keep(dataplane::del(&host_if));
    match key {
        Ok((node, id)) => {
            keep(endpoints::call(&ctx.cfg.store, &EndpointOp::Delete { node, id }).map(|_| ()))
        }
        Err(e) => keep(Err(e)),
    }
    keep(ctx.ipam("DEL").map(|_| ()));
    first.map_or(Ok(()), Err)
}

fn check(ctx: &Ctx<'_>) -> Result<(), CniError> {
    let netns = Netns::open(&ctx.cni.netns)?;
    let (node, id) = ctx.endpoint_key()?;
    let endpoint = endpoints::call(
        &ctx.cfg.store,
        &EndpointOp::Get {
            node: node.clone(),
            id: id.clone(),
        },
    )?
    .ok_or_else(|| {
        CniError::UnknownContainer(format!(
            "no workload endpoint {id} is recorded for node {node}"
        ))
    })?;
    let prev: Vec<IpAddr> = serde_json::from_slice::<Value>(ctx.stdin)
        .ok()
        .and_then(|v| v.get("prevResult")?.get("ips")?.as_array().cloned())
        .unwrap_or_default()
        .iter()
        .filter_map(|i| {
            i.get("address")?
                .as_str()?
                .parse::<ipnetwork::IpNetwork>()
                .ok()
        })
        .map(|n| n.ip())
        .collect();
    let ips: Vec<IpAddr> = if prev.is_empty() {
        endpoint.addresses.iter().map(|n| n.ip()).collect()
    } else {
        prev
    };
    dataplane::check(&netns, &endpoint.host_ifname, &ctx.cni.ifname, &ips)?;
    ctx.ipam("CHECK").map(|_| ())
}
