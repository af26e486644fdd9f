//! The accept loop, written out rather than `axum::serve` because a listener open to vendors'
//! webhooks must bound what a slow or hostile client can hold: `axum::serve` has no
//! header-read timeout and no connection cap, so a few hundred half-sent requests can stop
//! `/healthz` (and with it the systemd watchdog) and take the file descriptors that provider
//! calls need.
//!
//! - Each connection must send its request head within `http.header_timeout_ms` (hyper's
//!   header-read timeout; it also bounds an idle keep-alive connection's next request).
//! - At most `http.max_connections` are open. When all are taken, a new connection takes the
//!   place of the oldest one that is not in the middle of a request (still sending its head,
//!   or idle between requests); if every one is busy, the new connection is closed at once.
//!   A client that trickles its head therefore cannot keep `/healthz` out.
//! - The request timeout and the body limit are layers of the router (`mod.rs`).

use axum::Router;
use axum::extract::Request;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

/// The listener's bounds, from `[http]`.
#[derive(Debug, Clone, Copy)]
pub struct Bounds {
    pub header_timeout: Duration,
    pub max_connections: usize,
}

/// How long open connections get to finish at shutdown.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Serves `router` on `listener` until `shutdown`, then lets open connections finish their
/// request for a moment.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    bounds: Bounds,
    shutdown: CancellationToken,
) {
    let slots = Arc::new(Slots::new(bounds.max_connections));
    let connections = TaskTracker::new();
    loop {
        let stream = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of file descriptors, most likely: back off instead of spinning.
                    tracing::warn!(error = %e, "accepting an HTTP connection failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let Some(slot) = slots.take() else {
            tracing::warn!("every HTTP connection is busy; closing a new one");
            continue;
        };
        let router = router.clone();
        let shutdown = shutdown.clone();
        connections.spawn(async move {
            connection(stream, router, bounds, slot, shutdown).await;
        });
    }
    connections.close();
    let _ = tokio::time::timeout(SHUTDOWN_GRACE, connections.wait()).await;
}

async fn connection(
    stream: tokio::net::TcpStream,
    router: Router,
    bounds: Bounds,
    slot: Slot,
    shutdown: CancellationToken,
) {
    let busy = slot.busy.clone();
    let service = hyper::service::service_fn(move |request: Request<Incoming>| {
        let router = router.clone();
        let busy = busy.clone();
        busy.store(true, Ordering::Relaxed);
        async move {
            let response = router.oneshot(request).await;
            busy.store(false, Ordering::Relaxed);
            response
        }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(bounds.header_timeout)
        .serve_connection(TokioIo::new(stream), service);
    tokio::pin!(conn);
    tokio::select! {
        _ = conn.as_mut() => {}
        // Evicted to make room: the connection is dropped, which closes it.
        _ = slot.evicted.cancelled() => {}
        _ = shutdown.cancelled() => {
            conn.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(SHUTDOWN_GRACE, conn).await;
        }
    }
}

/// The open connections, oldest first, each with whether it is inside a request.
struct Slots {
    max: usize,
    open: Mutex<(u64, BTreeMap<u64, Entry>)>,
}

struct Entry {
    evict: CancellationToken,
    busy: Arc<AtomicBool>,
}

/// One connection's place; it gives the place back when dropped.
struct Slot {
    id: u64,
    slots: Arc<Slots>,
    evicted: CancellationToken,
    busy: Arc<AtomicBool>,
}

impl Slots {
    fn new(max: usize) -> Slots {
        Slots {
            max: max.max(1),
            open: Mutex::new((0, BTreeMap::new())),
        }
    }

    /// A place for a new connection, evicting the oldest idle one if every place is taken;
    /// `None` if every open connection is inside a request.
    fn take(self: &Arc<Self>) -> Option<Slot> {
        let mut guard = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let (next, open) = &mut *guard;
        if open.len() >= self.max {
            let idle = open
                .iter()
                .find(|(_, e)| !e.busy.load(Ordering::Relaxed))
                .map(|(id, _)| *id)?;
            if let Some(e) = open.remove(&idle) {
                e.evict.cancel();
            }
        }
        let id = *next;
        *next += 1;
        let evicted = CancellationToken::new();
        let busy = Arc::new(AtomicBool::new(false));
        let entry = Entry {
            evict: evicted.clone(),
            busy: busy.clone(),
        };
        open.insert(id, entry);
        Some(Slot {
            id,
            slots: Arc::clone(self),
            evicted,
            busy,
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut guard = self.slots.open.lock().unwrap_or_else(|e| e.into_inner());
        guard.1.remove(&self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_house_evicts_the_oldest_idle_connection_and_never_a_busy_one() {
        let slots = Arc::new(Slots::new(3));
        let a = slots.take().unwrap();
        let b = slots.take().unwrap();
        let c = slots.take().unwrap();
        a.busy.store(true, Ordering::Relaxed);
        let d = slots.take().expect("b is idle and gives way");
        assert!(!a.evicted.is_cancelled());
        assert!(b.evicted.is_cancelled());
        c.busy.store(true, Ordering::Relaxed);
        d.busy.store(true, Ordering::Relaxed);
        assert!(slots.take().is_none(), "every connection is busy");
        drop(a);
        assert!(slots.take().is_some(), "a's place is free again");
    }
}
