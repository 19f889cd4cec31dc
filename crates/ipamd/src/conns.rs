//! The service's connection threads: an elastic pool in which each waiting thread blocks in
//! `accept` on the listener itself, then reads the connection's request and answers it, with
//! no hand-over between threads on the way.
//!
//! The kernel wakes one waiting thread per connection (a blocking `accept` waits exclusively).
//! A thread that takes the last waiting place starts half as many again (at least one), up to
//! the pool's limit, so a client that is slow to send (or sends nothing) holds only its own
//! thread until the read deadline, never another client's; past the limit a connection waits
//! in the listen backlog until a thread is free. Threads past the [`KEEP`] kept warm leave after [`IDLE_EXIT`]
//! without work. How many requests run against the store at once is the handler's business
//! (the service bounds it with [`Permits`]).
//!
//! History (docs/benchmarks.md, "Connection threads that accept for themselves"): each
//! connection first got a freshly spawned reader thread that passed the request to one of a
//! fixed set of workers; then one accepting thread queued connections for a pool. Both cost a
//! second thread's wake-up per request, which on a loaded VM costs more than the work around
//! it.

use nix::sys::socket::{setsockopt, shutdown, sockopt::ReceiveTimeout, Shutdown};
use nix::sys::time::TimeVal;
use std::io::ErrorKind;
use std::os::fd::AsRawFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

/// Threads kept waiting for work however quiet the node is.
pub const KEEP: usize = 16;

/// How long a thread beyond [`KEEP`] waits for work before it leaves.
pub const IDLE_EXIT: Duration = Duration::from_secs(30);

/// Stack of a connection thread: a request's parse, the engine and the store's commit run on
/// it (the default 2 MiB is reserved per thread, and thousands of idle clients each hold one).
const STACK: usize = 1 << 20;

type Handler = dyn Fn(UnixStream) + Send + Sync;

/// How many threads a pool keeps and for how long ([`Conns::start`] uses [`KEEP`] and
/// [`IDLE_EXIT`]).
#[derive(Debug, Clone, Copy)]
pub struct Sizing {
    /// Threads at most; past them a connection waits in the listen backlog.
    pub limit: usize,
    /// Threads kept however quiet the node is.
    pub keep: usize,
    /// How long a thread beyond `keep` waits for a connection before it leaves.
    pub idle_exit: Duration,
}

struct State {
    /// Threads waiting in `accept`, or started and about to.
    idle: usize,
    /// Threads alive.
    threads: usize,
    closing: bool,
    last_warning: Option<Instant>,
}

struct Shared {
    listener: UnixListener,
    state: Mutex<State>,
    /// A thread left, or one saw the stop flag.
    changed: Condvar,
    handler: Box<Handler>,
    sizing: Sizing,
    stop: Arc<AtomicBool>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // The state is counters, consistent at every unlock: a panic elsewhere while holding
        // the lock leaves nothing half-done to hide.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The pool. [`Conns::finish`] serves what the listener has queued, then waits for every
/// running connection.
pub struct Conns {
    shared: Arc<Shared>,
}

impl Conns {
    /// Starts serving `listener` with [`KEEP`] and [`IDLE_EXIT`] and at most `limit`
    /// threads, each running `handler` on the connections it accepts. A connection accepted
    /// while `stop` is set (the service's shutdown, or its wake-up) is still served, and
    /// [`Conns::wait_stop`] returns.
    pub fn start(
        listener: UnixListener,
        limit: usize,
        stop: Arc<AtomicBool>,
        handler: impl Fn(UnixStream) + Send + Sync + 'static,
    ) -> std::io::Result<Self> {
        let sizing = Sizing {
            limit,
            keep: KEEP,
            idle_exit: IDLE_EXIT,
        };
        Self::start_sized(listener, sizing, stop, handler)
    }

    /// [`Conns::start`] with its sizing spelled out.
    pub fn start_sized(
        listener: UnixListener,
        sizing: Sizing,
        stop: Arc<AtomicBool>,
        handler: impl Fn(UnixStream) + Send + Sync + 'static,
    ) -> std::io::Result<Self> {
        let sizing = Sizing {
            limit: sizing.limit.max(1),
            ..sizing
        };
        // A waiting thread's `accept` returns after this long, so threads past `keep` can
        // leave; it is the listener's option, so it never applies to accepted connections.
        let wait = TimeVal::new(
            i64::try_from(sizing.idle_exit.as_secs()).unwrap_or(i64::MAX),
            i64::from(sizing.idle_exit.subsec_micros()),
        );
        setsockopt(&listener, ReceiveTimeout, &wait).map_err(std::io::Error::from)?;
        let shared = Arc::new(Shared {
            listener,
            state: Mutex::new(State {
                idle: 0,
                threads: 0,
                closing: false,
                last_warning: None,
            }),
            changed: Condvar::new(),
            handler: Box::new(handler),
            sizing,
            stop,
        });
        // The first thread, started here so a process out of threads hears of it (counted
        // before it runs, as every thread is).
        {
            let mut s = shared.lock();
            s.threads += 1;
            s.idle += 1;
        }
        start_thread(&shared)?;
        Ok(Conns { shared })
    }

    /// Threads alive now (waiting or serving).
    pub fn threads(&self) -> usize {
        self.shared.lock().threads
    }

    /// Returns once the stop flag is set (seen by a thread that accepted a connection or
    /// whose listener was shut down, or within a second otherwise).
    pub fn wait_stop(&self) {
        let mut s = self.shared.lock();
        while !self.shared.stop.load(Ordering::SeqCst) {
            s = self
                .shared
                .changed
                .wait_timeout(s, Duration::from_secs(1))
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }

    /// Shuts the listener down for new connections, serves the ones it has queued already,
    /// and waits until every thread has finished its connection and left.
    pub fn finish(self) {
        let mut s = self.shared.lock();
        s.closing = true;
        // A shut-down listener still hands out the connections queued on it, then fails
        // every waiting `accept` at once; new clients are refused and serve themselves.
        let _ = shutdown(self.shared.listener.as_raw_fd(), Shutdown::Read);
        while s.threads > 0 {
            s = self
                .shared
                .changed
                .wait(s)
                .unwrap_or_else(PoisonError::into_inner);
        }
    }
}

/// Starts `n` threads, already counted alive and waiting; those that cannot start (the
/// process is out of threads) are counted out again, and the connections wait for the others.
fn spawn(shared: &Arc<Shared>, n: usize) {
    for _ in 0..n {
        if start_thread(shared).is_err() {
            let mut s = shared.lock();
            s.threads -= 1;
            s.idle -= 1;
        }
    }
}

/// Starts one thread of the pool (already counted).
fn start_thread(shared: &Arc<Shared>) -> std::io::Result<()> {
    let for_thread = Arc::clone(shared);
    std::thread::Builder::new()
        .name("ipamd-conn".into())
        .stack_size(STACK)
        .spawn(move || run(&for_thread))
        .map(drop)
}

/// Counts a thread out of the pool when it leaves, also by a panic in the handler, so
/// [`Conns::finish`] never waits for a thread that is gone; unless the thread counted itself
/// out already, under the lock under which it decided to leave.
struct Alive<'a> {
    shared: &'a Shared,
    counted_out: bool,
}

impl Drop for Alive<'_> {
    fn drop(&mut self) {
        if !self.counted_out {
            self.shared.lock().threads -= 1;
        }
        self.shared.changed.notify_all();
    }
}

fn run(shared: &Arc<Shared>) {
    let mut alive = Alive {
        shared,
        counted_out: false,
    };
    let mut last_work = Instant::now();
    let mut pause = Duration::from_millis(10);
    loop {
        match shared.listener.accept() {
            Ok((conn, _)) => {
                pause = Duration::from_millis(10);
                let more = {
                    let mut s = shared.lock();
                    s.idle -= 1;
                    if s.idle == 0 && s.threads < shared.sizing.limit && !s.closing {
                        // Half as many again: a burst of clients that send nothing gets
                        // its threads in a few rounds instead of one thread start after
                        // another, which costs about a millisecond each (a new thread's
                        // first run).
                        let n = (s.threads / 2).clamp(1, shared.sizing.limit - s.threads);
                        s.threads += n;
                        s.idle += n;
                        n
                    } else {
                        0
                    }
                };
                if more > 0 {
                    spawn(shared, more);
                }
                if shared.stop.load(Ordering::SeqCst) {
                    // Under the lock, so a waiter between its look at the flag and its
                    // wait cannot miss this.
                    let _s = shared.lock();
                    shared.changed.notify_all();
                }
                // Blocking, as the listener is (accept gives no flag of its own).
                (shared.handler)(conn);
                shared.lock().idle += 1;
                last_work = Instant::now();
            }
            Err(e) => {
                let mut s = shared.lock();
                if s.closing {
                    s.idle -= 1;
                    return;
                }
                if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) {
                    if last_work.elapsed() >= shared.sizing.idle_exit
                        && s.threads > shared.sizing.keep
                    {
                        // Counted out under this lock: a count left for later would let
                        // other threads past `keep` see this one still there and leave too,
                        // below `keep` (down to no thread accepting).
                        s.idle -= 1;
                        s.threads -= 1;
                        alive.counted_out = true;
                        return;
                    }
                    continue;
                }
                if shared.stop.load(Ordering::SeqCst) {
                    // The listener was shut down under us: wait for finish, quietly.
                    drop(s);
                    shared.changed.notify_all();
                    std::thread::sleep(Duration::from_millis(10));
                    continue;
                }
                // Out of descriptors or memory: back off instead of spinning (and logging)
                // in a hot loop; one warning a second at most.
                if s.last_warning
                    .is_none_or(|t| t.elapsed() >= Duration::from_secs(1))
                {
                    tracing::warn!(error = %e, pause_ms = pause.as_millis(), "accept failed; backing off");
                    s.last_warning = Some(Instant::now());
                }
                drop(s);
                std::thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_secs(1));
            }
        }
    }
}

/// A counting semaphore: at most `n` holders at once.
pub struct Permits {
    free: Mutex<usize>,
    freed: Condvar,
}

/// One permit, given back on drop.
pub struct Permit<'a>(&'a Permits);

impl Permits {
    /// `n` permits.
    pub fn new(n: usize) -> Self {
        Permits {
            free: Mutex::new(n.max(1)),
            freed: Condvar::new(),
        }
    }

    /// Waits for a permit.
    pub fn take(&self) -> Permit<'_> {
        let mut f = self.free.lock().unwrap_or_else(PoisonError::into_inner);
        while *f == 0 {
            f = self.freed.wait(f).unwrap_or_else(PoisonError::into_inner);
        }
        *f -= 1;
        Permit(self)
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        let mut f = self.0.free.lock().unwrap_or_else(PoisonError::into_inner);
        *f += 1;
        drop(f);
        self.0.freed.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::sync::atomic::AtomicUsize;

    /// A listener on a fresh path in a directory removed with the returned guard.
    /// Waits, polling every `step`, until the pool's thread count satisfies `done` or
    /// `limit` has passed (the caller asserts what it expects after).
    fn wait_threads(conns: &Conns, done: impl Fn(usize) -> bool, limit: Duration, step: Duration) {
        let t = Instant::now();
        while !done(conns.threads()) && t.elapsed() < limit {
            std::thread::sleep(step);
        }
    }

    fn listener() -> (UnixListener, std::path::PathBuf, tempfile::TempDir) {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let path = dir.path().join("s.sock");
        let l = UnixListener::bind(&path).expect("bind");
        (l, path, dir)
    }

    fn sized(limit: usize, keep: usize, idle_exit: Duration) -> Sizing {
        Sizing {
            limit,
            keep,
            idle_exit,
        }
    }

    /// Echoes one byte, counting the connection before answering.
    fn echo(served: &Arc<AtomicUsize>) -> impl Fn(UnixStream) + Send + Sync + 'static {
        let served = Arc::clone(served);
        move |mut c: UnixStream| {
            let mut b = [0u8; 1];
            // Blocks until the client sends a byte or closes.
            let n = c.read(&mut b).unwrap_or(0);
            served.fetch_add(1, Ordering::SeqCst);
            if n == 1 {
                let _ = c.write_all(&b);
            }
        }
    }

    fn ask(path: &std::path::Path, byte: u8) -> u8 {
        let mut c = UnixStream::connect(path).expect("connect");
        c.write_all(&[byte]).expect("write_all succeeds");
        let mut got = [0u8; 1];
        c.read_exact(&mut got).expect("read_exact succeeds");
        got[0]
    }

    #[test]
    fn a_stuck_connection_holds_only_its_own_thread() {
        let (l, path, _dir) = listener();
        let served = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let conns = Conns::start(l, 8, stop, echo(&served)).expect("start");
        let stuck = UnixStream::connect(&path).expect("connect");
        // Others are answered while the first waits for its client.
        for i in 0..5u8 {
            assert_eq!(ask(&path, i), i);
        }
        assert_eq!(served.load(Ordering::SeqCst), 5);
        assert!(conns.threads() >= 2, "the stuck one and at least one more");
        drop(stuck);
        conns.finish();
        assert_eq!(served.load(Ordering::SeqCst), 6);
    }

    #[test]
    fn past_the_limit_a_connection_waits_for_a_thread_and_finish_serves_the_queue() {
        let (l, path, _dir) = listener();
        let gate = Arc::new((Mutex::new(false), Condvar::new()));
        let g2 = Arc::clone(&gate);
        let served = Arc::new(AtomicUsize::new(0));
        let s2 = Arc::clone(&served);
        let stop = Arc::new(AtomicBool::new(false));
        let conns = Conns::start_sized(l, sized(2, 2, IDLE_EXIT), stop, move |_c| {
            let (m, cv) = &*g2;
            let mut open = m.lock().expect("the lock");
            while !*open {
                open = cv.wait(open).expect("wait succeeds");
            }
            s2.fetch_add(1, Ordering::SeqCst);
        })
        .expect("start");
        let clients: Vec<_> = (0..4)
            .map(|_| UnixStream::connect(&path).expect("connect"))
            .collect();
        // Two threads hold two connections; no third thread starts for the others.
        wait_threads(
            &conns,
            |n| n >= 2,
            Duration::from_secs(5),
            Duration::from_millis(5),
        );
        std::thread::sleep(Duration::from_millis(100));
        assert_eq!(conns.threads(), 2);
        assert_eq!(served.load(Ordering::SeqCst), 0);
        {
            let (m, cv) = &*gate;
            *m.lock().expect("the lock") = true;
            cv.notify_all();
        }
        // The two waiting in the backlog are served too, then nobody gets in.
        conns.finish();
        assert_eq!(served.load(Ordering::SeqCst), 4);
        assert!(
            UnixStream::connect(&path).is_err(),
            "a finished pool takes no one"
        );
        drop(clients);
    }

    #[test]
    fn many_threads_leaving_at_once_leave_keep_behind() {
        // Forty threads past `keep` time out together: each decides to leave under the lock,
        // and none may count on another's leaving being counted later.
        let (l, path, _dir) = listener();
        let served = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let sizing = sized(64, 2, Duration::from_millis(100));
        let conns = Conns::start_sized(l, sizing, stop, echo(&served)).expect("start");
        for round in 0..3 {
            let stuck: Vec<_> = (0..40)
                .map(|_| UnixStream::connect(&path).expect("connect"))
                .collect();
            wait_threads(
                &conns,
                |n| n >= 41,
                Duration::from_secs(5),
                Duration::from_millis(5),
            );
            assert!(
                conns.threads() >= 41,
                "round {round}: a thread per stuck client"
            );
            drop(stuck);
            wait_threads(
                &conns,
                |n| n <= 2,
                Duration::from_secs(10),
                Duration::from_millis(2),
            );
            // Every thread past keep has timed out by now; none of keep may have followed.
            std::thread::sleep(Duration::from_millis(300));
            assert_eq!(conns.threads(), 2, "round {round}: keep stays");
        }
        assert_eq!(ask(&path, 7), 7, "those kept still serve");
        conns.finish();
    }

    #[test]
    fn threads_past_keep_leave_when_idle() {
        let (l, path, _dir) = listener();
        let served = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let sizing = sized(64, 1, Duration::from_millis(200));
        let conns = Conns::start_sized(l, sizing, stop, echo(&served)).expect("start");
        let stuck: Vec<_> = (0..6)
            .map(|_| UnixStream::connect(&path).expect("connect"))
            .collect();
        wait_threads(
            &conns,
            |n| n >= 7,
            Duration::from_secs(5),
            Duration::from_millis(5),
        );
        assert!(
            conns.threads() >= 7,
            "one thread per stuck client and one waiting"
        );
        drop(stuck);
        wait_threads(
            &conns,
            |n| n <= 1,
            Duration::from_secs(10),
            Duration::from_millis(20),
        );
        assert_eq!(conns.threads(), 1, "idle threads past keep left");
        assert_eq!(ask(&path, 7), 7, "the one kept still serves");
        conns.finish();
        assert_eq!(served.load(Ordering::SeqCst), 7);
    }

    #[test]
    fn wait_stop_returns_on_the_wake_up_connection() {
        let (l, path, _dir) = listener();
        let served = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let conns = Conns::start(l, 8, Arc::clone(&stop), echo(&served)).expect("start");
        let waiter = std::thread::spawn(move || {
            let t = Instant::now();
            conns.wait_stop();
            let took = t.elapsed();
            conns.finish();
            took
        });
        std::thread::sleep(Duration::from_millis(50));
        stop.store(true, Ordering::SeqCst);
        drop(UnixStream::connect(&path).expect("connect"));
        let took = waiter.join().expect("the waiter ends");
        assert!(
            took >= Duration::from_millis(50),
            "returned before the flag: {took:?}"
        );
        assert_eq!(
            served.load(Ordering::SeqCst),
            1,
            "the wake-up is served as a connection"
        );
    }

    #[test]
    fn a_handler_that_panics_does_not_hold_finish() {
        let (l, path, _dir) = listener();
        let stop = Arc::new(AtomicBool::new(false));
        let conns =
            Conns::start(l, 4, stop, |_c: UnixStream| panic!("handler failed")).expect("start");
        let _c = UnixStream::connect(&path).expect("connect");
        wait_threads(
            &conns,
            |n| n <= 1,
            Duration::from_secs(5),
            Duration::from_millis(5),
        );
        // Returns once the threads are gone, although one never finished its loop.
        conns.finish();
    }

    #[test]
    fn permits_bound_the_holders() {
        let p = Arc::new(Permits::new(2));
        let inside = Arc::new(AtomicUsize::new(0));
        let most = Arc::new(AtomicUsize::new(0));
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let (p, inside, most) = (Arc::clone(&p), Arc::clone(&inside), Arc::clone(&most));
                std::thread::spawn(move || {
                    for _ in 0..50 {
                        let _g = p.take();
                        let now = inside.fetch_add(1, Ordering::SeqCst) + 1;
                        most.fetch_max(now, Ordering::SeqCst);
                        std::thread::yield_now();
                        inside.fetch_sub(1, Ordering::SeqCst);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().expect("the thread ends");
        }
        let most = most.load(Ordering::SeqCst);
        assert!((1..=2).contains(&most), "{most} held at once");
    }
}
