//! The service's connection threads: an elastic pool in which one thread reads a connection's
//! request and answers it, with no hand-over between threads on the way.
//!
//! The accept loop queues each connection ([`Conns::submit`]); a waiting thread takes it, or,
//! when none waits, the loop starts one more, up to [`MAX_READERS`](crate::MAX_READERS)
//! threads. So a client that is slow to send (or sends nothing) holds only its own thread
//! until the read deadline, never another client's. Threads past the [`KEEP`] kept warm leave
//! after [`IDLE_EXIT`] without work. How many requests run against the store at once is the
//! handler's business (the service bounds it with [`Permits`]).
//!
//! Before this pool, each connection got a freshly spawned reader thread that passed the
//! request to one of a fixed set of workers: a thread start and a second wake-up on every
//! request (docs/benchmarks.md, "The service's exchange").

use std::collections::VecDeque;
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

/// Threads kept waiting for work however quiet the node is.
pub const KEEP: usize = 16;

/// How long a thread beyond [`KEEP`] waits for work before it leaves.
pub const IDLE_EXIT: Duration = Duration::from_secs(30);

/// Stack of a connection thread: a request's parse, the engine and the store's commit run on
/// it (the default 2 MiB is reserved per thread, and thousands of idle clients each hold one).
const STACK: usize = 1 << 20;

type Handler = dyn Fn(UnixStream) + Send + Sync;

struct State {
    queue: VecDeque<UnixStream>,
    /// Threads waiting for a connection.
    idle: usize,
    /// Threads alive.
    threads: usize,
    closing: bool,
}

struct Shared {
    state: Mutex<State>,
    /// A connection was queued, or the pool is closing.
    work: Condvar,
    /// A thread left.
    left: Condvar,
    handler: Box<Handler>,
    limit: usize,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // The state is a queue and counters, consistent at every unlock: a panic elsewhere
        // while holding the lock leaves nothing half-done to hide.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The pool. [`Conns::finish`] waits for every queued and running connection.
pub struct Conns {
    shared: Arc<Shared>,
}

impl Conns {
    /// A pool of at most `limit` threads, each running `handler` on the connections it takes.
    pub fn new(limit: usize, handler: impl Fn(UnixStream) + Send + Sync + 'static) -> Self {
        Conns {
            shared: Arc::new(Shared {
                state: Mutex::new(State {
                    queue: VecDeque::new(),
                    idle: 0,
                    threads: 0,
                    closing: false,
                }),
                work: Condvar::new(),
                left: Condvar::new(),
                handler: Box::new(handler),
                limit: limit.max(1),
            }),
        }
    }

    /// Queues a connection. False (and the connection is dropped, so its client sees the
    /// service fail and retries) when every thread is busy and no more may start.
    pub fn submit(&self, conn: UnixStream) -> bool {
        let mut s = self.shared.lock();
        if s.queue.len() >= s.idle {
            // No waiting thread is free for this one.
            if s.threads >= self.shared.limit {
                return false;
            }
            let shared = Arc::clone(&self.shared);
            let started = std::thread::Builder::new()
                .name("ipamd-conn".into())
                .stack_size(STACK)
                .spawn(move || run(&shared));
            match started {
                Ok(_) => s.threads += 1,
                // Queue it anyway when some thread will get to it.
                Err(_) if s.threads > 0 => {}
                Err(_) => return false,
            }
        }
        s.queue.push_back(conn);
        drop(s);
        self.shared.work.notify_one();
        true
    }

    /// Threads alive now (waiting or serving).
    pub fn threads(&self) -> usize {
        self.shared.lock().threads
    }

    /// Serves what is queued, then waits until every thread has finished its connection and
    /// left.
    pub fn finish(self) {
        let mut s = self.shared.lock();
        s.closing = true;
        self.shared.work.notify_all();
        while s.threads > 0 {
            s = self
                .shared
                .left
                .wait(s)
                .unwrap_or_else(PoisonError::into_inner);
        }
    }
}

/// Counts a thread out of the pool when it leaves, also by a panic in the handler, so
/// [`Conns::finish`] never waits for a thread that is gone.
struct Alive<'a>(&'a Shared);

impl Drop for Alive<'_> {
    fn drop(&mut self) {
        let mut s = self.0.lock();
        s.threads -= 1;
        drop(s);
        self.0.left.notify_all();
    }
}

fn run(shared: &Shared) {
    let _alive = Alive(shared);
    loop {
        let next = {
            let mut s = shared.lock();
            loop {
                if let Some(c) = s.queue.pop_front() {
                    break Some(c);
                }
                if s.closing {
                    break None;
                }
                s.idle += 1;
                let (g, waited) = shared
                    .work
                    .wait_timeout(s, IDLE_EXIT)
                    .unwrap_or_else(PoisonError::into_inner);
                s = g;
                s.idle -= 1;
                if waited.timed_out() && s.queue.is_empty() && s.threads > KEEP {
                    break None;
                }
            }
        };
        match next {
            Some(conn) => (shared.handler)(conn),
            None => return,
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
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn pair() -> (UnixStream, UnixStream) {
        UnixStream::pair().expect("socketpair")
    }

    #[test]
    fn a_stuck_connection_holds_only_its_own_thread() {
        let served = Arc::new(AtomicUsize::new(0));
        let s2 = Arc::clone(&served);
        let conns = Conns::new(8, move |mut c: UnixStream| {
            let mut b = [0u8; 1];
            // Blocks until the client sends a byte or closes.
            let n = c.read(&mut b).unwrap_or(0);
            // Counted before the answer, so a client that has its answer sees it counted.
            s2.fetch_add(1, Ordering::SeqCst);
            if n == 1 {
                let _ = c.write_all(&b);
            }
        });
        let (stuck, stuck_peer) = pair();
        assert!(conns.submit(stuck));
        // Others are answered while the first waits for its client.
        for i in 0..5u8 {
            let (a, mut b) = pair();
            assert!(conns.submit(a));
            b.write_all(&[i]).expect("write_all succeeds");
            let mut got = [0u8; 1];
            b.read_exact(&mut got).expect("read_exact succeeds");
            assert_eq!(got[0], i);
        }
        assert_eq!(served.load(Ordering::SeqCst), 5);
        assert!(conns.threads() >= 2, "the stuck one and at least one more");
        drop(stuck_peer);
        conns.finish();
        assert_eq!(served.load(Ordering::SeqCst), 6);
    }

    #[test]
    fn past_the_limit_a_connection_is_refused_and_finish_serves_the_queue() {
        let gate = Arc::new((Mutex::new(false), Condvar::new()));
        let g2 = Arc::clone(&gate);
        let served = Arc::new(AtomicUsize::new(0));
        let s2 = Arc::clone(&served);
        let conns = Conns::new(2, move |_c: UnixStream| {
            let (m, cv) = &*g2;
            let mut open = m.lock().expect("the lock");
            while !*open {
                open = cv.wait(open).expect("wait succeeds");
            }
            s2.fetch_add(1, Ordering::SeqCst);
        });
        let mut peers = Vec::new();
        for _ in 0..2 {
            let (a, b) = pair();
            assert!(conns.submit(a));
            peers.push(b);
        }
        // Both threads are held (or about to be): a third has no thread to run on.
        let (a, _b) = pair();
        assert!(!conns.submit(a));
        assert_eq!(conns.threads(), 2);
        {
            let (m, cv) = &*gate;
            *m.lock().expect("the lock") = true;
            cv.notify_all();
        }
        conns.finish();
        assert_eq!(served.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn a_handler_that_panics_does_not_hold_finish() {
        let conns = Conns::new(4, |_c: UnixStream| panic!("handler failed"));
        let (a, _b) = pair();
        assert!(conns.submit(a));
        // Returns once the thread is gone, although it never finished its loop.
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
