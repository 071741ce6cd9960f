//! The HTTP workers: one single-threaded tokio runtime per core, each accepting on its own
//! listener bound to the same address with `SO_REUSEPORT`. The kernel spreads new
//! connections over the listeners, and a connection is read, handled and answered on the
//! thread that accepted it, without the multi-threaded scheduler's cross-thread wake-ups and
//! work stealing (`make bench`: redirects went from 0.77-0.81x to 0.87-0.93x of nginx's, as
//! nginx itself runs a worker process per core).
//!
//! What the workers share is shared as before (`App`: the store, caches, metrics, limits;
//! one connection cap for all). Background work (group commit, hit flushing, the rate
//! limiter's sweeper) stays on the main runtime. `SO_REUSEPORT` also lets another process of
//! the same user bind the port; in a container there is no other.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::JoinHandle;

use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::{Semaphore, watch};

use crate::app::App;
use crate::metrics::Metrics;
use crate::serve::{self, Limits};

/// Same as `TcpListener::bind`'s.
const BACKLOG: u32 = 1024;

/// `count` listeners on `addr`, all in one `SO_REUSEPORT` group. With port 0 the first
/// picks the port and the others join it.
pub fn bind(addr: SocketAddr, count: usize) -> io::Result<Vec<std::net::TcpListener>> {
    let first = bind_one(addr)?;
    let local = first.local_addr()?;
    let mut listeners = vec![first];
    for _ in 1..count {
        listeners.push(bind_one(local)?);
    }
    Ok(listeners)
}

fn bind_one(addr: SocketAddr) -> io::Result<std::net::TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseport(true)?;
    // As `TcpListener::bind` does: a restart can bind while old connections are in TIME_WAIT.
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(BACKLOG)?.into_std()
}

/// The running workers.
pub struct Workers {
    threads: Vec<JoinHandle<()>>,
    stopping: watch::Sender<bool>,
}

impl Workers {
    /// Starts a worker thread per listener. Fails (nothing left running) if a runtime or a
    /// thread cannot be created.
    pub fn start(
        listeners: Vec<std::net::TcpListener>,
        app: &App,
        limits: Limits,
        metrics: &Arc<Metrics>,
    ) -> io::Result<Self> {
        let (stopping, stopped) = watch::channel(false);
        // One cap for the process, whichever worker accepted the connection.
        let slots = Arc::new(Semaphore::new(limits.max_connections));
        let mut workers = Self {
            threads: Vec::with_capacity(listeners.len()),
            stopping,
        };
        for (i, listener) in listeners.into_iter().enumerate() {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let (app, metrics, slots) = (app.clone(), Arc::clone(metrics), Arc::clone(&slots));
            let mut stopped = stopped.clone();
            let thread = std::thread::Builder::new()
                .name(format!("http-{i}"))
                .spawn(move || {
                    runtime.block_on(async move {
                        let listener = match TcpListener::from_std(listener) {
                            Ok(l) => l,
                            Err(e) => {
                                tracing::error!(error = %e, worker = i, "cannot use the listener");
                                return;
                            }
                        };
                        let stop = async move {
                            // An error means the sender is gone: stop as well.
                            let _ = stopped.wait_for(|stop| *stop).await;
                        };
                        serve::serve(listener, app, limits, slots, metrics, stop).await;
                    });
                });
            match thread {
                Ok(t) => workers.threads.push(t),
                Err(e) => {
                    workers.stop_blocking();
                    return Err(e);
                }
            }
        }
        Ok(workers)
    }

    /// Stops accepting on every worker and waits until their connections' requests are
    /// answered (idle connections are closed at once).
    pub async fn stop(self) {
        let _ = tokio::task::spawn_blocking(move || self.stop_blocking()).await;
    }

    fn stop_blocking(self) {
        let _ = self.stopping.send(true);
        for thread in self.threads {
            if thread.join().is_err() {
                tracing::error!("an HTTP worker panicked");
            }
        }
    }
}
