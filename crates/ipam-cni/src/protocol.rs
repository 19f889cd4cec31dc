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
//! A service that does not speak the request's version, cannot read it (an unknown `kind`,
//! a missing field), or serves another store than the request's `store` names, answers with
//! `error`; the client then serves the request itself. Frames are limited to [`MAX_FRAME`] bytes.

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

/// A request: the protocol version, the store the client means, and what it asks.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    /// Protocol version.
    pub version: u32,
    /// The store the client means ([`ipam_store::StoreSpec::identity`]); a service serving
    /// another store declines with `error`, and the client serves itself. `None`: any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub store: Option<String>,
    /// What it asks, by `kind`.
    #[serde(flatten)]
    pub body: Body,
}

/// What a request asks for; `kind` on the wire names the variant, its fields sit beside it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Body {
    /// Serve a CNI invocation.
    Cni {
        /// The plugin's `CNI_*` environment.
        env: BTreeMap<String, String>,
        /// The network configuration the plugin read on stdin.
        stdin: String,
    },
    /// Liveness.
    Ping,
    /// An operator command and its output format, as `ipamctl` encodes them.
    Admin {
        /// `{"command": ..., "json": bool}`.
        admin: serde_json::Value,
    },
    /// A workload endpoint operation of the main plugin.
    Endpoint {
        /// The operation.
        endpoint: EndpointOp,
    },
}

impl Request {
    /// A request of this protocol version.
    pub fn new(store: Option<String>, body: Body) -> Request {
        Request {
            version: VERSION,
            store,
            body,
        }
    }

    /// A CNI invocation.
    pub fn cni(env: BTreeMap<String, String>, stdin: String, store: Option<String>) -> Request {
        Request::new(store, Body::Cni { env, stdin })
    }

    /// A liveness check (for `store`, when given).
    pub fn ping(store: Option<String>) -> Request {
        Request::new(store, Body::Ping)
    }
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

/// Writes one frame, length and body in one write: a reader woken by the length alone would
/// block again for the body, a second wake-up on every exchange.
pub fn write_frame<T: Serialize>(w: &mut impl Write, msg: &T) -> std::io::Result<()> {
    let mut frame = Vec::with_capacity(512);
    frame.extend_from_slice(&[0; 4]);
    serde_json::to_writer(&mut frame, msg).map_err(std::io::Error::other)?;
    let len = u32::try_from(frame.len() - 4)
        .ok()
        .filter(|l| *l <= MAX_FRAME)
        .ok_or_else(|| std::io::Error::other("frame too large"))?;
    frame[..4].copy_from_slice(&len.to_be_bytes());
    w.write_all(&frame)?;
    w.flush()
}

/// Reads one frame.
pub fn read_frame<T: for<'de> Deserialize<'de>>(r: &mut impl Read) -> std::io::Result<T> {
    let body = read_frame_bytes(r)?;
    serde_json::from_slice(&body)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
}

/// Reads one frame's body, undecoded.
pub fn read_frame_bytes(r: &mut impl Read) -> std::io::Result<Vec<u8>> {
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
    Ok(body)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_keep_their_wire_shape() {
        let env = BTreeMap::from([("CNI_COMMAND".to_string(), "ADD".to_string())]);
        let r = Request::cni(env, "{}".into(), Some("sled:/s".into()));
        let v = serde_json::to_value(&r).expect("to_value succeeds");
        assert_eq!(
            v,
            serde_json::json!({"version": 1, "store": "sled:/s", "kind": "cni",
                               "env": {"CNI_COMMAND": "ADD"}, "stdin": "{}"})
        );
        let back: Request = serde_json::from_value(v).expect("from_value succeeds");
        assert_eq!(back, r);
        let ping = serde_json::to_value(Request::ping(None)).expect("to_value succeeds");
        assert_eq!(ping, serde_json::json!({"version": 1, "kind": "ping"}));
        let op = EndpointOp::Delete {
            node: "n".into(),
            id: "i".into(),
        };
        let e = serde_json::to_value(Request::new(None, Body::Endpoint { endpoint: op }))
            .expect("to_value succeeds");
        assert_eq!(e["kind"], "endpoint");
        assert_eq!(e["endpoint"]["delete"]["node"], "n");
        // A kind without its fields is not a request.
        assert!(serde_json::from_value::<Request>(
            serde_json::json!({"version": 1, "kind": "admin"})
        )
        .is_err());
    }
}
