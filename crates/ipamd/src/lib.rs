//! The node-local IPAM service: holds the datastore open and serves `calico-ipam` (and later
//! `ipamctl`) over a unix socket, so a plugin call costs a socket round trip instead of opening
//! the store (which takes milliseconds and excludes other processes).
//!
//! The protocol is `ipam_cni::protocol` (versioned, length-prefixed JSON frames).
//! Each connection is read and answered by one thread of an elastic pool ([`conns`]), at most
//! [`WORKERS`] requests at once; concurrent requests share the store's flushes (group commit).
//! [`serve`] returns when `shutdown` is set and the listener is woken, after every in-flight
//! request has finished.
//!
//! With `--routes direct|bgp` it also runs the route agent ([`agent`]): the store's block
//! affinities become this node's routes, programmed over netlink ([`kernel`]) or announced
//! through BIRD ([`bird`]); the node registers its address ([`autodetect`]) so others can
//! route to it.
//!
//! Not here: CNI semantics (ipam-cni), allocation (ipam-core), storage (ipam-store).

// Bad input and store faults are errors, never panics: no `unwrap` outside tests.
#![cfg_attr(not(test), deny(clippy::unwrap_used))]

pub mod agent;
pub mod autodetect;
pub mod bird;
pub mod conns;
pub mod kernel;
pub mod metrics;

use ipam_cni::protocol::{self, Body, Request, Response};
use ipam_core::{Datastore, Ipam};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Counters of a serve loop.
#[derive(Debug, Default)]
pub struct Stats {
    /// Connections accepted.
    pub connections: AtomicU64,
    /// Requests served.
    pub served: AtomicU64,
    /// Request metrics, when the service exports them.
    pub metrics: std::sync::OnceLock<Arc<metrics::Metrics>>,
}

/// How long a client may take to send its request, and to take its answer: well under the
/// plugin's own timeout, so a slow or idle client costs only its own thread for this long.
pub const IO_DEADLINE: Duration = Duration::from_secs(2);

/// Connections being read or answered at once, at most (a thread each); past this a new
/// connection waits in the listen backlog until a thread is free (at most [`IO_DEADLINE`]).
pub const MAX_READERS: usize = 8192;

/// Reads one request within [`IO_DEADLINE`]. A frame that is not a request of this protocol
/// version is answered here, with `error` (its client then serves itself).
fn read_request(mut conn: UnixStream) -> Option<(UnixStream, Request)> {
    let _ = conn.set_read_timeout(Some(IO_DEADLINE));
    let _ = conn.set_write_timeout(Some(IO_DEADLINE));
    let frame = match protocol::read_frame_bytes(&mut conn) {
        Ok(b) => b,
        Err(e) => {
            tracing::debug!(error = %e, "unreadable request");
            return None;
        }
    };
    // Decoded once on the common path; only a frame that is not a request of this version is
    // looked at again, to say why.
    let decoded = serde_json::from_slice::<Request>(&frame);
    if let Ok(r) = &decoded {
        if r.version == protocol::VERSION {
            return decoded.ok().map(|r| (conn, r));
        }
    }
    #[derive(serde::Deserialize)]
    struct Versioned {
        version: Option<serde_json::Value>,
    }
    let version = serde_json::from_slice::<Versioned>(&frame)
        .ok()
        .and_then(|v| v.version)
        .and_then(|v| v.as_u64());
    let why = match (version, decoded) {
        (Some(v), Err(e)) if v == u64::from(protocol::VERSION) => {
            format!("not a request this service understands: {e}")
        }
        (v, _) => format!(
            "protocol version {} is not supported; this service speaks {}",
            v.map_or_else(|| "(none)".to_string(), |v| v.to_string()),
            protocol::VERSION
        ),
    };
    let resp = Response {
        version: protocol::VERSION,
        error: Some(why),
        ..Default::default()
    };
    if let Err(e) = protocol::write_frame(&mut conn, &resp) {
        tracing::debug!(error = %e, "could not decline a request");
    }
    None
}

fn handle_conn<S: Datastore>(
    ipam: &Ipam<S>,
    mut conn: UnixStream,
    req: Request,
    stats: &Stats,
    identity: Option<&str>,
) {
    let resp = if let (Some(want), Some(have)) = (req.store.as_deref(), identity) {
        if want == have {
            dispatch(ipam, req, stats.metrics.get().map(|m| m.as_ref()))
        } else {
            Response {
                version: protocol::VERSION,
                error: Some(format!("this service serves {have}, not {want}")),
                ..Default::default()
            }
        }
    } else {
        dispatch(ipam, req, stats.metrics.get().map(|m| m.as_ref()))
    };
    stats.served.fetch_add(1, Ordering::Relaxed);
    if let Err(e) = protocol::write_frame(&mut conn, &resp) {
        tracing::warn!(error = %e, "could not send a response");
    }
}

fn dispatch<S: Datastore>(
    ipam: &Ipam<S>,
    req: Request,
    metrics: Option<&metrics::Metrics>,
) -> Response {
    {
        match req.body {
            Body::Ping => Response {
                version: protocol::VERSION,
                stdout: "pong".into(),
                ..Default::default()
            },
            Body::Cni { env, stdin } => {
                let started = std::time::Instant::now();
                let out = ipam_cni::serve(ipam, &env, stdin.as_bytes());
                if let Some(m) = metrics {
                    let code = if out.exit_code == 0 {
                        0
                    } else {
                        serde_json::from_str::<serde_json::Value>(&out.stdout)
                            .ok()
                            .and_then(|v| v["code"].as_u64())
                            .and_then(|c| u32::try_from(c).ok())
                            .unwrap_or(999)
                    };
                    let verb = env.get("CNI_COMMAND").map_or("", String::as_str);
                    m.observe(verb, code, started.elapsed().as_secs_f64());
                }
                Response {
                    version: protocol::VERSION,
                    stdout: out.stdout,
                    exit_code: out.exit_code,
                    ..Default::default()
                }
            }
            Body::Admin { admin: body } => admin(ipam, body),
            Body::Endpoint { endpoint: op } => endpoint(ipam, op),
        }
    }
}

/// Requests served at once (they block on the store's flush, so a few run together to share
/// it); more connections may be open and being read.
pub const WORKERS: usize = 16;

#[derive(serde::Deserialize)]
struct AdminRequest {
    command: ipam_admin::Command,
    #[serde(default)]
    json: bool,
}

fn admin<S: Datastore>(ipam: &Ipam<S>, body: serde_json::Value) -> Response {
    let req: Result<AdminRequest, _> = serde_json::from_value(body);
    match req {
        Ok(r) => {
            let out = ipam_admin::execute(ipam, &r.command, r.json);
            Response {
                version: protocol::VERSION,
                stdout: out.stdout,
                exit_code: out.exit_code,
                files: out.files,
                ..Default::default()
            }
        }
        Err(e) => Response {
            version: protocol::VERSION,
            error: Some(format!(
                "not an ipamctl command this service understands: {e}"
            )),
            ..Default::default()
        },
    }
}

fn endpoint<S: Datastore>(ipam: &Ipam<S>, op: ipam_cni::protocol::EndpointOp) -> Response {
    match ipam_cni::endpoints::apply(ipam, &op) {
        Ok(e) => Response {
            version: protocol::VERSION,
            stdout: serde_json::to_string(&e).unwrap_or_else(|_| "null".into()),
            ..Default::default()
        },
        Err(e) => Response {
            version: protocol::VERSION,
            stdout: serde_json::to_string(&e).unwrap_or_default(),
            exit_code: 1,
            ..Default::default()
        },
    }
}

/// Serves connections until `shutdown` is set (and one more connection, or [`wake`], unblocks
/// the accept). Connections already queued are still served; returns when every request has
/// been answered.
pub fn serve<S: Datastore + 'static>(
    listener: UnixListener,
    ipam: Arc<Ipam<S>>,
    shutdown: Arc<AtomicBool>,
    stats: Arc<Stats>,
) -> std::io::Result<()> {
    serve_store(listener, ipam, shutdown, stats, None)
}

/// [`serve`], for the store named `identity` ([`ipam_store::StoreSpec::identity`]): requests
/// that name another store are declined, so their clients serve themselves on the store they
/// mean instead of being answered from this one.
pub fn serve_store<S: Datastore + 'static>(
    listener: UnixListener,
    ipam: Arc<Ipam<S>>,
    shutdown: Arc<AtomicBool>,
    stats: Arc<Stats>,
    identity: Option<String>,
) -> std::io::Result<()> {
    let socket_path = listener
        .local_addr()
        .ok()
        .and_then(|a| a.as_pathname().map(Path::to_path_buf));
    let socket_id = socket_path.as_deref().and_then(file_id);
    // One thread accepts a connection, reads it and answers it; at most WORKERS requests run
    // at once.
    let permits = conns::Permits::new(WORKERS);
    let conns = conns::Conns::start(listener, MAX_READERS, shutdown, move |conn| {
        stats.connections.fetch_add(1, Ordering::Relaxed);
        if let Some((conn, req)) = read_request(conn) {
            let _permit = permits.take();
            handle_conn(&ipam, conn, req, &stats, identity.as_deref());
        }
    })?;
    conns.wait_stop();
    // Stop taking new work: clients that connect from now on find no socket and serve
    // themselves. The path is removed only while it is still this listener's: a successor
    // may have bound it already. A client that looked the path up just before it went can
    // still land in the queue a moment later, so the pool serves on a little before it shuts
    // the listener (and then serves what is queued).
    if let (Some(path), Some(ours)) = (&socket_path, socket_id) {
        if file_id(path) == Some(ours) {
            let _ = std::fs::remove_file(path);
        }
    }
    std::thread::sleep(Duration::from_millis(50));
    // Threads leave once every queued connection is answered or has given up (at most
    // IO_DEADLINE from now), so a stuck client cannot hold the shutdown.
    conns.finish();
    Ok(())
}

/// The (device, inode) of the file at `path`.
fn file_id(path: &Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::symlink_metadata(path)
        .ok()
        .map(|m| (m.dev(), m.ino()))
}

/// How often [`watch_socket`] looks at the socket path.
pub const SOCKET_WATCH_INTERVAL: Duration = Duration::from_millis(500);

/// Stops the serve loop of `listener` (sets `shutdown` and shuts the listener down, which
/// unblocks its accept) when the file at `path` stops being this listener's socket: removed
/// with its directory, or replaced by another service. Nobody can reach such a service, and
/// it would hold the store for nothing.
pub fn watch_socket(
    listener: &UnixListener,
    path: &Path,
    shutdown: Arc<AtomicBool>,
) -> std::io::Result<()> {
    let ours = file_id(path).ok_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::NotFound,
            format!("{} is not there after binding it", path.display()),
        )
    })?;
    let listener = listener.try_clone()?;
    let path = path.to_path_buf();
    std::thread::Builder::new()
        .name("socket-watch".into())
        .spawn(move || loop {
            std::thread::sleep(SOCKET_WATCH_INTERVAL);
            if shutdown.load(Ordering::SeqCst) {
                return;
            }
            if file_id(&path) != Some(ours) {
                tracing::warn!(socket = %path.display(), "the socket was removed or replaced; stopping");
                shutdown.store(true, Ordering::SeqCst);
                use std::os::fd::AsRawFd;
                let _ = nix::sys::socket::shutdown(
                    listener.as_raw_fd(),
                    nix::sys::socket::Shutdown::Both,
                );
                return;
            }
        })?;
    Ok(())
}

/// Opens a log file for appending, created 0600 (its directory 0700 when missing); an
/// existing one is made 0600 when others could read it.
pub fn open_log_file(path: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
    if let Some(dir) = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty() && !d.exists())
    {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)?;
    }
    let f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)?;
    use std::os::unix::fs::MetadataExt;
    if f.metadata()?.mode() & 0o077 != 0 {
        f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    }
    Ok(f)
}

/// Opens the store, waiting while another process holds it (or etcd is unreachable): up to
/// `wait`, or as long as it takes when `None`, saying every 10 s why. With `exit_if_served`,
/// returns `None` as soon as another service answers on that socket for the same store.
pub fn open_store(
    spec: &ipam_store::StoreSpec,
    wait: Option<Duration>,
    exit_if_served: Option<&Path>,
) -> Result<Option<Box<dyn Datastore>>, ipam_store::SpecOpenError> {
    let start = std::time::Instant::now();
    let identity = spec.identity();
    let mut noted = start;
    loop {
        // Short slices for sled, so a service that is waiting takes the store soon after it
        // is free; etcd gets the time a connection may need.
        let slice = match spec {
            ipam_store::StoreSpec::Etcd(_) => Duration::from_secs(5),
            _ => Duration::from_millis(200),
        };
        match spec.open(slice) {
            Ok(s) => return Ok(Some(s)),
            Err(e) if e.is_transient() => {
                if let Some(socket) = exit_if_served {
                    if answers(socket, &identity) {
                        return Ok(None);
                    }
                }
                if wait.is_some_and(|w| start.elapsed() >= w) {
                    return Err(e);
                }
                if noted.elapsed() >= Duration::from_secs(10) {
                    tracing::warn!(error = %e, waited_s = start.elapsed().as_secs(), "still waiting for the store");
                    noted = std::time::Instant::now();
                }
            }
            Err(e) => return Err(e),
        }
    }
}

/// Whether a service answers on `socket` for the store `identity`.
pub fn answers(socket: &Path, identity: &str) -> bool {
    let req = Request::ping(Some(identity.to_string()));
    matches!(protocol::call(socket, &req, IO_DEADLINE), Ok(r) if r.error.is_none())
}

/// Unblocks a [`serve`] loop whose `shutdown` flag is set.
pub fn wake(socket: &Path) {
    let _ = UnixStream::connect(socket);
}

/// Binds the socket: creates its directory (0700), refuses a directory that another user owns
/// or that others may write to (they could replace the socket), removes a stale socket file
/// that nobody answers on, and makes the socket 0600.
pub fn bind(socket: &Path) -> std::io::Result<UnixListener> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
    if let Some(dir) = socket.parent() {
        if !dir.exists() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)?;
        }
        let meta = std::fs::metadata(dir)?;
        // Our effective uid, read from /proc (owner of our own process directory).
        let me = std::fs::metadata("/proc/self")?.uid();
        if meta.uid() != me || meta.mode() & 0o022 != 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::PermissionDenied,
                format!(
                    "socket directory {} is owned by user {} with mode {:o}: it must be owned by user {me} and writable by no one else",
                    dir.display(),
                    meta.uid(),
                    meta.mode() & 0o7777
                ),
            ));
        }
    }
    if socket.exists() {
        if UnixStream::connect(socket).is_ok() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::AddrInUse,
                format!("another service answers on {}", socket.display()),
            ));
        }
        std::fs::remove_file(socket)?;
    }
    let l = UnixListener::bind(socket)?;
    std::fs::set_permissions(socket, std::fs::Permissions::from_mode(0o600))?;
    Ok(l)
}
