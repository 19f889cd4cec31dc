//! The `calico` main CNI plugin, as a library: it wires a pod the way Calico does and records
//! the pod as a workload endpoint in the IPAM store.
//!
//! ADD asks the IPAM plugin named by `ipam.type` for addresses ([`delegate`]), creates a veth
//! pair whose host end is `cali` + 11 hex digits ([`naming`]), gives the pod end each address
//! as /32 (/128) with a default route via the link-local next hop 169.254.1.1
//! (fe80::ecee:eeff:feee:eeee), routes each address to the host end ([`dataplane`]), stores the
//! endpoint, and prints the CNI result ([`result`]). Any failure undoes what was done. DEL
//! undoes it all and succeeds when there is nothing to undo; CHECK verifies it; GC and STATUS
//! go to the IPAM plugin.
//!
//! Not here: address management (the IPAM plugin, e.g. `calico-ipam`), routes between nodes.

// Bad input and store faults are errors, never panics: no `unwrap` outside tests.
#![cfg_attr(not(test), deny(clippy::unwrap_used))]

pub mod config;
pub mod dataplane;
pub mod delegate;
pub mod naming;
pub mod result;
pub mod run;

pub use run::{run, Output};
