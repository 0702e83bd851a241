//! A userspace TCP proxy for one directed peer link, whose two directions the harness controls.
//!
//! Node *i* dials node *j* through the proxy of link i→j: `forward` carries what *i* sends
//! (requests), `backward` what *j* answers. Each direction is in one of three [`Mode`]s:
//!
//! - [`Mode::Pass`]: bytes flow.
//! - [`Mode::Hang`]: bytes stop flowing but stay buffered (the kernel's and the proxy's), like
//!   a network that drops every packet while TCP keeps retransmitting; when the direction passes
//!   again, delivery resumes where it stopped.
//! - [`Mode::Reset`]: every open connection of the link is reset (RST) and new ones are reset
//!   as soon as they are accepted.
//!
//! The proxy runs on a tokio runtime the caller passes in (the harness keeps one apart from the
//! workload's, so a busy checker or client cannot slow the network down).
//!
//! A proxy can start before the node it leads to has a port ([`Proxy::start_unrouted`]): the
//! nodes are told of each other's proxies when they start, and learn their own ports only once
//! they have bound them. Until [`Proxy::route_to`] names the node, connections are reset, as
//! to a node that is not up yet.

use std::io;
use std::net::{SocketAddr, TcpListener as StdTcpListener};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::runtime::Handle;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Bytes copied per read.
const BUFFER_BYTES: usize = 64 * 1024;

/// Pause after a failed accept.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// What one direction of a link does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Pass,
    Hang,
    Reset,
}

/// One direction of a link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// From the dialling node to the dialled one.
    Forward,
    /// Back from the dialled node.
    Backward,
}

/// The modes of both directions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinkModes {
    pub forward: Mode,
    pub backward: Mode,
}

impl LinkModes {
    /// Both directions pass.
    pub const PASS: LinkModes = LinkModes {
        forward: Mode::Pass,
        backward: Mode::Pass,
    };

    fn get(self, direction: Direction) -> Mode {
        match direction {
            Direction::Forward => self.forward,
            Direction::Backward => self.backward,
        }
    }

    fn any_reset(self) -> bool {
        self.forward == Mode::Reset || self.backward == Mode::Reset
    }
}

/// Where a proxy forwards to: set once, when the node behind it has bound its port.
type Upstream = Arc<OnceLock<SocketAddr>>;

/// A running proxy; stops (and drops its connections) when dropped.
pub struct Proxy {
    listen: SocketAddr,
    upstream: Upstream,
    modes: watch::Sender<LinkModes>,
    accept_task: JoinHandle<()>,
}

impl Proxy {
    /// Listens on a free loopback port and forwards every connection to `upstream`.
    pub fn start(runtime: &Handle, upstream: SocketAddr) -> io::Result<Proxy> {
        let proxy = Self::start_unrouted(runtime)?;
        proxy.route_to(upstream);
        Ok(proxy)
    }

    /// Listens on a free loopback port, resetting every connection until [`Self::route_to`].
    pub fn start_unrouted(runtime: &Handle) -> io::Result<Proxy> {
        let listener = StdTcpListener::bind(("127.0.0.1", 0))?;
        listener.set_nonblocking(true)?;
        let listen = listener.local_addr()?;
        let (modes, _) = watch::channel(LinkModes::PASS);
        let upstream = Upstream::default();
        let accept_task = {
            let _guard = runtime.enter();
            let listener = TcpListener::from_std(listener)?;
            runtime.spawn(accept_loop(listener, upstream.clone(), modes.clone()))
        };
        Ok(Proxy {
            listen,
            upstream,
            modes,
            accept_task,
        })
    }

    /// Forwards connections to `upstream` from now on. A node keeps its address for life (a
    /// restart binds it again), so the first route is the only one: later calls change nothing
    /// and return false.
    pub fn route_to(&self, upstream: SocketAddr) -> bool {
        self.upstream.set(upstream).is_ok()
    }

    /// The address nodes should dial.
    pub fn listen_addr(&self) -> SocketAddr {
        self.listen
    }

    /// Sets both directions.
    pub fn set(&self, modes: LinkModes) {
        self.modes.send_replace(modes);
    }

    /// Sets one direction, leaving the other as it is.
    pub fn set_direction(&self, direction: Direction, mode: Mode) {
        self.modes.send_modify(|modes| match direction {
            Direction::Forward => modes.forward = mode,
            Direction::Backward => modes.backward = mode,
        });
    }

    /// The current modes.
    pub fn modes(&self) -> LinkModes {
        *self.modes.borrow()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        // Stops accepting; the connection tasks end when they see the channel closed.
        self.accept_task.abort();
        self.modes.send_replace(LinkModes {
            forward: Mode::Reset,
            backward: Mode::Reset,
        });
    }
}

async fn accept_loop(listener: TcpListener, upstream: Upstream, modes: watch::Sender<LinkModes>) {
    loop {
        let client = match listener.accept().await {
            Ok((client, _)) => client,
            Err(_) => {
                // Out of descriptors or similar: back off instead of spinning.
                tokio::time::sleep(ACCEPT_BACKOFF).await;
                continue;
            }
        };
        let upstream = match upstream.get() {
            Some(upstream) if !modes.borrow().any_reset() => *upstream,
            _ => {
                reset(client);
                continue;
            }
        };
        tokio::spawn(serve(client, upstream, modes.subscribe()));
    }
}

/// Drops a connection with an RST rather than a FIN.
// `set_linger` is deprecated because a non-zero linger blocks the thread on drop; a zero
// linger never blocks (close() sends RST at once), which is exactly what a reset wants.
#[allow(deprecated)]
fn reset(stream: TcpStream) {
    // If setting it fails the peer just sees a FIN.
    let _ = stream.set_linger(Some(Duration::ZERO));
    drop(stream);
}

async fn serve(client: TcpStream, upstream: SocketAddr, modes: watch::Receiver<LinkModes>) {
    let Ok(server) = TcpStream::connect(upstream).await else {
        reset(client);
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (client_read, client_write) = client.into_split();
    let (server_read, server_write) = server.into_split();
    let forward = pump(client_read, server_write, Direction::Forward, modes.clone());
    let backward = pump(server_read, client_write, Direction::Backward, modes);
    // When either direction ends (EOF, error or reset), the connection is over.
    let (client_read, server_write, server_read, client_write) = tokio::select! {
        halves = forward => {
            let (client_read, server_write) = halves;
            (Some(client_read), Some(server_write), None, None)
        }
        halves = backward => {
            let (server_read, client_write) = halves;
            (None, None, Some(server_read), Some(client_write))
        }
    };
    // Reunite what we can to send RSTs; the rest is dropped (FIN).
    if let (Some(read), Some(write)) = (client_read, client_write) {
        if let Ok(stream) = read.reunite(write) {
            reset(stream);
        }
    }
    if let (Some(read), Some(write)) = (server_read, server_write) {
        if let Ok(stream) = read.reunite(write) {
            reset(stream);
        }
    }
}

/// Copies one direction while its mode allows; returns the halves when the copy ends.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    direction: Direction,
    mut modes: watch::Receiver<LinkModes>,
) -> (
    tokio::net::tcp::OwnedReadHalf,
    tokio::net::tcp::OwnedWriteHalf,
) {
    let mut buffer = vec![0u8; BUFFER_BYTES];
    loop {
        // Wait until this direction passes; any reset ends the connection.
        loop {
            let current = *modes.borrow_and_update();
            if current.any_reset() {
                return (from, to);
            }
            if current.get(direction) == Mode::Pass {
                break;
            }
            if modes.changed().await.is_err() {
                return (from, to);
            }
        }
        let read = tokio::select! {
            read = from.read(&mut buffer) => read,
            changed = modes.changed() => {
                if changed.is_err() {
                    return (from, to);
                }
                continue;
            }
        };
        let count = match read {
            Ok(0) | Err(_) => return (from, to),
            Ok(count) => count,
        };
        // Hold the bytes while the direction hangs; drop them on reset.
        loop {
            let current = *modes.borrow_and_update();
            if current.any_reset() {
                return (from, to);
            }
            if current.get(direction) == Mode::Pass {
                break;
            }
            if modes.changed().await.is_err() {
                return (from, to);
            }
        }
        if to.write_all(&buffer[..count]).await.is_err() {
            return (from, to);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::time::timeout;

    /// Generous: CI boxes are small and busy.
    const PATIENCE: Duration = Duration::from_secs(10);
    const SHORT: Duration = Duration::from_millis(300);

    /// An echo server on a free port.
    async fn echo_server() -> SocketAddr {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let (mut stream, _) = listener.accept().await.unwrap();
                tokio::spawn(async move {
                    let mut buffer = [0u8; 1024];
                    loop {
                        match stream.read(&mut buffer).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => {
                                if stream.write_all(&buffer[..n]).await.is_err() {
                                    return;
                                }
                            }
                        }
                    }
                });
            }
        });
        addr
    }

    async fn round_trip(stream: &mut TcpStream, message: &[u8]) -> io::Result<Vec<u8>> {
        stream.write_all(message).await?;
        let mut reply = vec![0u8; message.len()];
        stream.read_exact(&mut reply).await?;
        Ok(reply)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn pass_hang_and_reset_per_direction() {
        let upstream = echo_server().await;
        let proxy = Proxy::start(&Handle::current(), upstream).unwrap();
        let mut stream = TcpStream::connect(proxy.listen_addr()).await.unwrap();

        // Pass: echoes.
        let reply = timeout(PATIENCE, round_trip(&mut stream, b"ping")).await;
        assert_eq!(reply.unwrap().unwrap(), b"ping");

        // Hang the answers: the request arrives but no reply comes back ...
        proxy.set_direction(Direction::Backward, Mode::Hang);
        stream.write_all(b"held").await.unwrap();
        let mut reply = [0u8; 4];
        assert!(timeout(SHORT, stream.read_exact(&mut reply)).await.is_err());
        // ... until the direction passes again: nothing was lost.
        proxy.set_direction(Direction::Backward, Mode::Pass);
        timeout(PATIENCE, stream.read_exact(&mut reply))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(&reply, b"held");

        // Hang the requests: same, in the other direction.
        proxy.set_direction(Direction::Forward, Mode::Hang);
        stream.write_all(b"wait").await.unwrap();
        assert!(timeout(SHORT, stream.read_exact(&mut reply)).await.is_err());
        proxy.set(LinkModes::PASS);
        timeout(PATIENCE, stream.read_exact(&mut reply))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(&reply, b"wait");

        // Reset: the open connection dies, and new ones are refused.
        proxy.set_direction(Direction::Forward, Mode::Reset);
        let outcome = timeout(PATIENCE, round_trip(&mut stream, b"gone")).await;
        assert!(outcome.unwrap().is_err(), "connection survived a reset");
        let fresh = timeout(PATIENCE, async {
            let mut stream = TcpStream::connect(proxy.listen_addr()).await?;
            round_trip(&mut stream, b"nope").await
        })
        .await;
        assert!(
            fresh.unwrap().is_err(),
            "new connection passed a reset link"
        );

        // Healed: new connections work again.
        proxy.set(LinkModes::PASS);
        let mut healed = TcpStream::connect(proxy.listen_addr()).await.unwrap();
        let reply = timeout(PATIENCE, round_trip(&mut healed, b"back")).await;
        assert_eq!(reply.unwrap().unwrap(), b"back");
        assert_eq!(proxy.modes(), LinkModes::PASS);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn resets_until_routed_then_forwards() {
        let upstream = echo_server().await;
        let proxy = Proxy::start_unrouted(&Handle::current()).unwrap();
        let early = timeout(PATIENCE, async {
            let mut stream = TcpStream::connect(proxy.listen_addr()).await?;
            round_trip(&mut stream, b"soon").await
        })
        .await;
        assert!(early.unwrap().is_err(), "an unrouted proxy passed bytes");

        assert!(proxy.route_to(upstream));
        let mut stream = TcpStream::connect(proxy.listen_addr()).await.unwrap();
        let reply = timeout(PATIENCE, round_trip(&mut stream, b"here")).await;
        assert_eq!(reply.unwrap().unwrap(), b"here");
        // The route is for life.
        assert!(!proxy.route_to(proxy.listen_addr()));
    }
}
