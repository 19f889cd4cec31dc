//! Workload endpoint records for the main plugin, kept in the IPAM store: through the node
//! service when it answers for the configured store, otherwise on the store itself under the
//! host lock, exactly as the IPAM verbs are served.

use crate::backend;
use crate::config::PluginConfig;
use crate::error::CniError;
use crate::protocol::{self, Body, CallError, EndpointOp, Request};
use ipam_core::{Datastore, Endpoint, Ipam};
use ipam_store::SystemClock;
use std::sync::Arc;
use std::time::Instant;

/// Applies `op` on an open store. `Get` answers the endpoint, the others `None`.
pub fn apply<S: Datastore>(ipam: &Ipam<S>, op: &EndpointOp) -> Result<Option<Endpoint>, CniError> {
    match op {
        EndpointOp::Put(e) => ipam.put_endpoint(e).map(|()| None),
        EndpointOp::Delete { node, id } => ipam.delete_endpoint(node, id).map(|_| None),
        EndpointOp::Get { node, id } => ipam.endpoint(node, id),
    }
    .map_err(CniError::from)
}

/// Applies `op` on the store `cfg` names: through the node service when it serves that store,
/// else locally under the host lock.
pub fn call(cfg: &PluginConfig, op: &EndpointOp) -> Result<Option<Endpoint>, CniError> {
    let req = Request::new(
        Some(cfg.datastore.identity()),
        Body::Endpoint {
            endpoint: op.clone(),
        },
    );
    let timeout = cfg.lock_timeout + std::time::Duration::from_secs(5);
    match protocol::call(&cfg.ipamd_socket, &req, timeout) {
        Ok(r) if r.error.is_none() => {
            if r.exit_code != 0 {
                return Err(serde_json::from_str::<CniError>(&r.stdout)
                    .unwrap_or_else(|_| CniError::try_again(r.stdout)));
            }
            return serde_json::from_str(&r.stdout)
                .map_err(|e| CniError::decode(format!("node service answer: {e}")));
        }
        Ok(_) | Err(CallError::NotRunning(_)) | Err(CallError::Untrusted(_)) => {}
        Err(CallError::Failed(e)) => {
            return Err(CniError::try_again(format!(
                "the IPAM node service failed mid-request: {e}"
            )))
        }
    }
    let start = Instant::now();
    let _lock = backend::host_lock(cfg)?;
    let store = backend::open_store(cfg, cfg.lock_timeout.saturating_sub(start.elapsed()))?;
    apply(&Ipam::new(store, Arc::new(SystemClock)), op)
}
