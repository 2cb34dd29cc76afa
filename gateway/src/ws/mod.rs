//! `/ws/user-updates/`: the handshake ([`upgrade`]), who may open a socket
//! ([`admission`]), the socket task that forwards the hub's frames ([`socket`])
//! and the threads sockets run on ([`threads`]).

pub mod admission;
pub mod inbound;
pub mod socket;
pub mod threads;
pub mod upgrade;

use std::{net::SocketAddr, sync::Arc};

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use warp::{
    http::{HeaderMap, HeaderValue, header},
    reply::{Reply, Response},
};

use crate::{events::Hub, presence::Presence, security::cors::Cors, state::AppState};

/// What answering a handshake needs: the checks, the hub, and where socket tasks
/// run and are tracked.
#[derive(Clone)]
pub struct Endpoint {
    /// Tokens, rate limits and socket caps.
    pub state: AppState,
    /// Which browser origins may open a socket.
    pub cors: Cors,
    /// Where sockets get their frames.
    pub hub: Arc<Hub>,
    /// Who is where, for presence frames.
    pub presence: Arc<Presence>,
    /// Ping interval and timeout of every socket.
    pub sockets: socket::SocketConfig,
    /// Cancelled at shutdown: every socket closes with 1001.
    pub shutdown: CancellationToken,
    /// Tracks socket tasks, so shutdown can wait for them to finish.
    pub tracker: TaskTracker,
    /// Where socket tasks run ([`threads`]).
    pub runtime: tokio::runtime::Handle,
}

impl Endpoint {
    /// Admits the handshake (or answers why not), then answers 101 and runs the
    /// socket on the socket threads.
    pub fn open(
        &self,
        handshake: upgrade::Handshake,
        query: &str,
        headers: &HeaderMap,
        client: Option<SocketAddr>,
    ) -> Response {
        let admitted = match admission::admit(&self.state, &self.cors, query, headers, client) {
            Ok(admitted) => admitted,
            Err(error) => return error.into_response(),
        };
        let subprotocol = admitted.subprotocol;
        // Only what the socket task keeps.
        let tracker = self.tracker.clone();
        let shared = socket::Shared {
            hub: self.hub.clone(),
            presence: self.presence.clone(),
            config: self.sockets.clone(),
            shutdown: self.shutdown.clone(),
        };
        let mut response = handshake
            .accept(&self.runtime, move |socket| {
                tracker.track_future(socket::serve(socket, shared, admitted))
            })
            .into_response();
        if subprotocol {
            response.headers_mut().insert(
                header::SEC_WEBSOCKET_PROTOCOL,
                HeaderValue::from_static("bearer"),
            );
        }
        response
    }
}
