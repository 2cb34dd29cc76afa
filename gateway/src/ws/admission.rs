//! Who may open a socket, checked in the handshake before the upgrade is
//! answered: a browser's origin, the token, read permission, the connect rate,
//! the resume position and the socket caps.

use std::{net::SocketAddr, time::SystemTime};

use warp::http::{HeaderMap, header};

use crate::{
    error::Error,
    events::{Resume, UserSet},
    query,
    security::{
        auth,
        cors::Cors,
        limits::{self, Class, SocketSlot},
    },
    state::AppState,
};

/// What a socket was admitted with: it holds its place under the socket caps
/// until it ends, and ends when its token does.
#[derive(Debug, Default)]
pub struct Lease {
    /// When the token expires (`None`: anonymous, never).
    pub expires_at: Option<SystemTime>,
    /// The socket's place under the caps.
    pub slot: Option<SocketSlot>,
}

/// A handshake that passed every check.
#[derive(Debug)]
pub struct Admitted {
    /// Where the socket resumes (`?since=&epoch=`).
    pub resume: Option<Resume>,
    /// The users a filtered socket follows (`?users=`); `None`: every event.
    pub users: Option<UserSet>,
    /// The token's `sub` (`None` without authentication): what presence shows
    /// of this socket's member.
    pub sub: Option<String>,
    /// Its place under the caps and its token's expiry.
    pub lease: Lease,
    /// The token came as `Sec-WebSocket-Protocol: bearer, <token>`: answer with
    /// the `bearer` subprotocol.
    pub subprotocol: bool,
}

/// Checks a handshake in order: a browser's origin (403), the token from
/// `Sec-WebSocket-Protocol` or `?token=` (401), read permission (403), the connect
/// rate (429), `since` and `users` (400), the socket caps (503). The token is
/// never logged.
pub fn admit(
    state: &AppState,
    cors: &Cors,
    query: &str,
    headers: &HeaderMap,
    client: Option<SocketAddr>,
) -> Result<Admitted, Error> {
    let text = |name| {
        headers
            .get(name)
            .and_then(|v: &warp::http::HeaderValue| v.to_str().ok())
    };
    if !cors.socket_allowed(text(header::ORIGIN), text(header::HOST)) {
        return Err(Error::OriginRefused);
    }
    let params = query::parse(query);
    let from_protocol = auth::subprotocol_token(text(header::SEC_WEBSOCKET_PROTOCOL));
    let token = from_protocol.or_else(|| query::last(&params, "token"));
    let caller = state.caller(token, client)?;
    if !caller.read {
        return Err(Error::Forbidden);
    }
    let identity = limits::identity(&caller, client);
    state
        .limits
        .check(Class::Connect, &identity)
        .map_err(|wait| Error::Throttled(limits::wait_seconds(wait)))?;
    let resume = parse_resume(query).map_err(Error::BadRequest)?;
    let users = query::last(&params, "users")
        .map(UserSet::parse_query)
        .transpose()
        .map_err(Error::BadRequest)?;
    let slot = state
        .limits
        .open_socket(&identity)
        .ok_or(Error::TooManySockets)?;
    Ok(Admitted {
        resume,
        users,
        sub: caller.sub,
        lease: Lease {
            expires_at: caller.expires_at,
            slot: Some(slot),
        },
        subprotocol: from_protocol.is_some(),
    })
}

/// Reads `?since=&epoch=`: no `since` is a live-only socket.
pub fn parse_resume(query: &str) -> Result<Option<Resume>, String> {
    let params = query::parse(query);
    let epoch = query::last(&params, "epoch").map(str::to_owned);
    match query::last(&params, "since") {
        None | Some("") => Ok(None),
        Some(since) => since
            .parse::<u64>()
            .map(|since| Some(Resume { since, epoch }))
            .map_err(|_| format!("since must be a non-negative integer, not {since:?}.")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resume_needs_a_numeric_since() {
        assert_eq!(parse_resume("").unwrap(), None);
        assert_eq!(
            parse_resume("since=5&epoch=abc").unwrap(),
            Some(Resume {
                since: 5,
                epoch: Some("abc".into())
            })
        );
        assert_eq!(
            parse_resume("since=5").unwrap(),
            Some(Resume {
                since: 5,
                epoch: None
            })
        );
        assert!(parse_resume("since=-1").is_err());
    }
}
