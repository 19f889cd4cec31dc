//! The node service's socket protocol, version 1.
//!
//! A unix stream socket; each message is a frame: a 4-byte big-endian length, then that many
//! bytes of JSON. One request and one response per connection.
//!
//! ```text
//! request:  {"version": 1, "kind": "cni", "env": {"CNI_COMMAND": "ADD", ...}, "stdin": "<network config>", "store": "sled:/var/lib/calico-ipam/store"}
//!           {"version": 1, "kind": "ping"}
//!           {"version": 1, "kind": "admin", "admin": {"command": {...}, "json": false}}
//!           {"version": 1, "kind": "endpoint", "endpoint": {"put": {...}} | {"delete": {"node", "id"}} | {"get": {...}}}
//! response: {"version": 1, "stdout": "<what the plugin prints>", "exit_code": 0}
//!           {"version": 1, "stdout": "...", "exit_code": 0, "files": [["path", "content"]]}  (admin)
//!           {"version": 1, "error": "<why the request was not served>"}
//! ```
//!
//! A service that does not speak the request's version, or that serves another store than the
//! request's `store` names, answers with `error`; the client then serves the request itself. Frames are limited to [`MAX_FRAME`] bytes.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

/// The protocol version this build speaks.
pub const VERSION: u32 = 1;
/// Largest frame accepted.
pub const MAX_FRAME: u32 = 4 << 20;

/// What a request asks for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// Serve a CNI invocation.
    Cni,
    /// Liveness.
    Ping,
    /// An operator command (`ipamctl`), in `admin`.
    Admin,
    /// A workload endpoint operation of the main plugin, in `endpoint`.
    Endpoint,
}

/// What the main plugin asks of the endpoint records.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EndpointOp {
    /// Store (create or replace) an endpoint.
    Put(Box<ipam_core::Endpoint>),
    /// Delete one, if present.
    Delete {
        /// Node.
        node: String,
        /// Endpoint id.
        id: String,
    },
    /// Read one: the response's stdout is its JSON, or `null`.
    Get {
        /// Node.
        node: String,
        /// Endpoint id.
        id: String,
    },
}

/// A request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    /// Protocol version.
    pub version: u32,
    /// What to do.
    pub kind: Kind,
    /// The plugin's `CNI_*` environment.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// The network configuration the plugin read on stdin.
    #[serde(default)]
    pub stdin: String,
    /// For `admin`: the operator command and its output format, as `ipamctl` encodes them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admin: Option<serde_json::Value>,
    /// The store the client means ([`ipam_store::StoreSpec::identity`]); a service serving
    /// another store declines with `error`, and the client serves itself. `None`: any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub store: Option<String>,
    /// For `endpoint`: the operation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<EndpointOp>,
}

/// A response.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Response {
    /// Protocol version.
    pub version: u32,
    /// What the plugin prints on stdout.
    #[serde(default)]
    pub stdout: String,
    /// The plugin's exit code.
    #[serde(default)]
    pub exit_code: i32,
    /// Set when the request was not served.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// For `admin`: files the client should write (path, content).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub files: Vec<(String, String)>,
}

/// Writes one frame.
pub fn write_frame<T: Serialize>(w: &mut impl Write, msg: &T) -> std::io::Result<()> {
    let body = serde_json::to_vec(msg).map_err(std::io::Error::other)?;
    let len = u32::try_from(body.len())
        .ok()
        .filter(|l| *l <= MAX_FRAME)
        .ok_or_else(|| std::io::Error::other("frame too large"))?;
    w.write_all(&len.to_be_bytes())?;
    w.write_all(&body)?;
    w.flush()
}

/// Reads one frame.
pub fn read_frame<T: for<'de> Deserialize<'de>>(r: &mut impl Read) -> std::io::Result<T> {
    let mut len = [0u8; 4];
    r.read_exact(&mut len)?;
    let len = u32::from_be_bytes(len);
    if len > MAX_FRAME {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("frame of {len} bytes exceeds {MAX_FRAME}"),
        ));
    }
    let mut body = vec![0u8; len as usize];
    r.read_exact(&mut body)?;
    serde_json::from_slice(&body)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
}

/// Why a call to the service did not produce a response.
#[derive(Debug)]
pub enum CallError {
    /// No service listens (connect failed): serve the request locally.
    NotRunning(std::io::Error),
    /// Something listens on the socket, but it runs as another user than this process: its
    /// answers are not trusted (anyone who binds the path first could forge results), nothing
    /// was sent, and the request is served locally.
    Untrusted(String),
    /// The service was reached but the exchange failed; the request may have been applied.
    Failed(std::io::Error),
}

/// Trusts only a service running as the same user as this process (root, for a CNI plugin).
fn check_peer(s: &UnixStream, socket: &Path) -> Result<(), CallError> {
    let cred = nix::sys::socket::getsockopt(s, nix::sys::socket::sockopt::PeerCredentials)
        .map_err(|e| {
            CallError::Untrusted(format!("{}: no peer credentials: {e}", socket.display()))
        })?;
    let me = nix::unistd::geteuid().as_raw();
    if cred.uid() != me {
        return Err(CallError::Untrusted(format!(
            "{} is served by process {} of user {}, not {me}: ignored",
            socket.display(),
            cred.pid(),
            cred.uid()
        )));
    }
    Ok(())
}

/// Sends a request and waits for the response.
pub fn call(socket: &Path, req: &Request, timeout: Duration) -> Result<Response, CallError> {
    let mut s = UnixStream::connect(socket).map_err(CallError::NotRunning)?;
    check_peer(&s, socket)?;
    let io = |r: std::io::Result<()>| r.map_err(CallError::Failed);
    io(s.set_read_timeout(Some(timeout)))?;
    io(s.set_write_timeout(Some(timeout)))?;
    io(write_frame(&mut s, req))?;
    read_frame(&mut s).map_err(CallError::Failed)
}
