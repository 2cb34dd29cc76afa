//! What every request handler shares (the user-service channel, the checks on
//! callers, the hub), and the one place a request's credentials become a caller
//! with a client that speaks for it.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use tonic::transport::Channel;
use warp::http::{HeaderMap, header};

use crate::{
    error::{AuthError, Error},
    events::Hub,
    observe,
    security::{
        auth::{self, Authenticator, Caller},
        hosts::AllowedHosts,
        limits::{self, Class, Limits},
    },
    upstream::{Credentials, UsersClient},
};

/// The gateway's shared state, cloned into each request (every field is cheap to
/// clone).
#[derive(Clone)]
pub struct AppState {
    /// The channel to the user-service for REST calls (its request timeout
    /// applies); each request gets a client on it that speaks for its caller.
    pub channel: Channel,
    /// The gateway's own credentials (service token), from which each caller's are
    /// made.
    pub credentials: Credentials,
    /// Checks bearer tokens.
    pub auth: Arc<Authenticator>,
    /// Rate limits and socket caps.
    pub limits: Arc<Limits>,
    /// The user-service's grpc.health.v1, for `/readyz`.
    pub health: tonic_health::pb::health_client::HealthClient<Channel>,
    /// Redis, when events come from it: `/readyz` checks it answers.
    pub redis: Option<deadpool_redis::Pool>,
    /// The fan-out hub: `/readyz` checks the event source is live; writes wait
    /// on it until their event is on the feed.
    pub hub: Arc<Hub>,
    /// How long a write waits, at most, for its event to be on the feed.
    pub write_feed_wait: Duration,
    /// How long an allowed request's body may take to arrive (408 beyond).
    pub body_read_timeout: Duration,
    /// The `Host` names the API answers to.
    pub hosts: Arc<AllowedHosts>,
}

/// A request's authenticated caller and the user-service client that speaks for
/// it (its `sub` goes with every RPC).
pub struct Session {
    /// Who is calling and what they may do.
    pub caller: Caller,
    /// The user-service client for this request: its RPCs carry the caller's
    /// `sub`, so the user-service's logs and checks see who asked.
    pub users: UsersClient,
}

impl AppState {
    /// Authenticates a request from its `Authorization` header (401, or 429 once
    /// the client's budget for refusals is spent).
    pub fn authenticate(
        &self,
        headers: &HeaderMap,
        client: Option<SocketAddr>,
    ) -> Result<Session, Error> {
        let header = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        let caller = self.caller(auth::bearer(header), client)?;
        let users = self
            .credentials
            .for_caller(caller.sub.as_deref())
            .client(self.channel.clone());
        Ok(Session { caller, users })
    }

    /// The caller a bearer token names (none: anonymous), or the answer to
    /// credentials that were refused.
    pub fn caller(&self, token: Option<&str>, client: Option<SocketAddr>) -> Result<Caller, Error> {
        let caller = self
            .auth
            .authenticate(token)
            .map_err(|error| self.refused(error, client))?;
        observe::record_sub(caller.sub.as_deref());
        Ok(caller)
    }

    /// 401, unless the client has spent its read budget (its IP's, as an
    /// anonymous reader's), then 429: bad tokens cannot be tried, nor 401s drawn,
    /// without limit.
    fn refused(&self, error: AuthError, client: Option<SocketAddr>) -> Error {
        let identity = limits::identity(&Caller::nobody(), client);
        match self.limits.check(Class::Read, &identity) {
            Ok(()) => Error::Unauthenticated(error),
            Err(wait) => Error::Throttled(limits::wait_seconds(wait)),
        }
    }
}
