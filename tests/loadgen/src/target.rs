//! The deployment under load, named by its base URL (the gateway's, or the
//! floor's), resolved once so thousands of connections do no DNS.

use std::{net::SocketAddr, time::Duration};

use anyhow::{Context, bail};

/// The flag every load scenario takes: where the deployment is.
#[derive(clap::Args, Clone, Debug)]
pub struct TargetArgs {
    /// Base URL of the deployment (the gateway, or the floor): REST is under
    /// `<url>/api/users/`, the socket at `<url>/ws/user-updates/`. Plain http only.
    #[arg(long, env = "LOADGEN_URL", default_value = "http://127.0.0.1:8080")]
    pub url: String,
    /// A JWT for a gateway with authentication on: sent as `Authorization:
    /// Bearer <token>` on REST and `Sec-WebSocket-Protocol: bearer, <token>` on
    /// sockets. Needs the `users:read` scope, and `users:write` to PATCH.
    #[arg(long, env = "LOADGEN_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
}

/// A resolved base URL.
#[derive(Clone, Debug)]
pub struct Target {
    /// The URL as given, for reports.
    pub url: String,
    /// `host[:port]`, for the `Host` header.
    pub authority: String,
    /// The address connections go to.
    pub addr: SocketAddr,
    /// A path prefix without a trailing slash (empty at the root), so a deployment
    /// behind a path-routing ingress works.
    pub prefix: String,
    /// The bearer token to present, if any.
    pub token: Option<String>,
}

impl Target {
    /// Parses and resolves the `--url` (and takes the `--token`).
    pub async fn from_args(args: &TargetArgs) -> anyhow::Result<Self> {
        let mut target = Self::resolve(&args.url).await?;
        target.token = args.token.clone().filter(|t| !t.is_empty());
        Ok(target)
    }

    /// Parses and resolves `url` (`http://host[:port][/prefix]`).
    pub async fn resolve(url: &str) -> anyhow::Result<Self> {
        let uri: http::Uri = url.parse().with_context(|| format!("bad URL {url:?}"))?;
        match uri.scheme_str() {
            Some("http") => {}
            Some(other) => bail!("only http:// URLs are supported, not {other}://"),
            None => bail!("the URL {url:?} needs a scheme (http://)"),
        }
        let authority = uri
            .authority()
            .with_context(|| format!("the URL {url:?} has no host"))?;
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']');
        let port = authority.port_u16().unwrap_or(80);
        let addr = tokio::net::lookup_host((host, port))
            .await
            .with_context(|| format!("resolving {host}"))?
            .next()
            .with_context(|| format!("{host} has no address"))?;
        Ok(Self {
            url: url.to_owned(),
            authority: authority.as_str().to_owned(),
            addr,
            prefix: uri.path().trim_end_matches('/').to_owned(),
            token: None,
        })
    }

    /// The REST path of user `id`.
    pub fn user_path(&self, id: i64) -> String {
        format!("{}/api/users/{id}/", self.prefix)
    }

    /// The REST path of the user collection.
    pub fn users_path(&self) -> String {
        format!("{}/api/users/", self.prefix)
    }

    /// The WebSocket URL of the live feed.
    pub fn ws_url(&self) -> String {
        format!("ws://{}{}/ws/user-updates/", self.authority, self.prefix)
    }
}

/// Parses a duration given as seconds (`5`, `0.5`) or with a unit (`500ms`, `2m`).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    if let Ok(secs) = text.trim().parse::<f64>() {
        return Duration::try_from_secs_f64(secs).map_err(|e| e.to_string());
    }
    humantime::parse_duration(text.trim()).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn resolves_paths_and_socket_url() {
        let t = Target::resolve("http://127.0.0.1:8080").await.unwrap();
        assert_eq!(t.addr, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(t.user_path(1), "/api/users/1/");
        assert_eq!(t.ws_url(), "ws://127.0.0.1:8080/ws/user-updates/");
        let t = Target::resolve("http://127.0.0.1/base/").await.unwrap();
        assert_eq!(t.addr.port(), 80);
        assert_eq!(t.users_path(), "/base/api/users/");
        assert_eq!(t.ws_url(), "ws://127.0.0.1/base/ws/user-updates/");
        assert!(Target::resolve("https://127.0.0.1").await.is_err());
        assert!(Target::resolve("127.0.0.1:8080").await.is_err());
    }

    #[test]
    fn durations_in_seconds_or_with_units() {
        assert_eq!(parse_duration("5"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_duration("0.25"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("1m"), Ok(Duration::from_secs(60)));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("-1").is_err());
    }
}
