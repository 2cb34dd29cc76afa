//! Which `Host` names the API answers to, as Django's `ALLOWED_HOSTS`: the API
//! writes the request's host into its pagination links, so a forged `Host` would
//! otherwise be reflected into them (cache poisoning, links to an attacker's
//! site). Loopback names and the listen address are always allowed; deployments
//! add their public names with `--allowed-hosts`.

use std::net::SocketAddr;

/// The allowed names, lower case, without ports: `example.com` (exactly that),
/// `.example.com` (it and every subdomain), or `*` (any).
#[derive(Clone, Debug)]
pub struct AllowedHosts {
    names: Vec<String>,
}

impl AllowedHosts {
    /// The configured names, plus `localhost`, `127.0.0.1`, `::1` and the listen
    /// address's host.
    pub fn new(configured: &[String], listen: SocketAddr) -> AllowedHosts {
        let mut names: Vec<String> = configured
            .iter()
            .map(|name| name.trim().trim_end_matches('.').to_ascii_lowercase())
            .filter(|name| !name.is_empty())
            .collect();
        names.extend(["localhost", "127.0.0.1", "::1"].map(str::to_owned));
        if !listen.ip().is_unspecified() {
            names.push(listen.ip().to_string());
        }
        AllowedHosts { names }
    }

    /// Whether a `Host` header (with or without a port) names an allowed host.
    pub fn allows(&self, host: &str) -> bool {
        let Some(name) = host_name(host) else {
            return false;
        };
        self.names.iter().any(|allowed| {
            allowed == "*"
                || *allowed == name
                || allowed
                    .strip_prefix('.')
                    .is_some_and(|domain| name == domain || name.ends_with(allowed.as_str()))
        })
    }
}

/// The host of a `Host` value, lower case, without port, brackets or a trailing
/// dot; `None` when it is malformed.
fn host_name(host: &str) -> Option<String> {
    let host = host.trim();
    let name = if let Some(rest) = host.strip_prefix('[') {
        let (inside, after) = rest.split_once(']')?;
        if !(after.is_empty() || after.strip_prefix(':').is_some_and(is_port)) {
            return None;
        }
        inside
    } else {
        match host.rsplit_once(':') {
            Some((name, port)) if is_port(port) => name,
            Some(_) => return None,
            None => host,
        }
    };
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    let valid = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-.:".contains(&b));
    valid.then_some(name)
}

fn is_port(text: &str) -> bool {
    !text.is_empty() && text.len() <= 5 && text.bytes().all(|b| b.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hosts(configured: &[&str]) -> AllowedHosts {
        let configured: Vec<String> = configured.iter().map(|s| (*s).to_owned()).collect();
        AllowedHosts::new(&configured, "10.0.0.5:8080".parse().unwrap())
    }

    #[test]
    fn loopback_and_the_listen_address_are_always_allowed() {
        let hosts = hosts(&[]);
        for host in [
            "localhost",
            "localhost:8080",
            "127.0.0.1:8080",
            "[::1]:80",
            "10.0.0.5:8080",
        ] {
            assert!(hosts.allows(host), "{host}");
        }
        for host in [
            "evil.example",
            "evil.example:8080",
            "",
            "a b",
            "localhost:x",
            "[::1]x",
        ] {
            assert!(!hosts.allows(host), "{host}");
        }
    }

    #[test]
    fn configured_names_match_exactly_or_as_domains() {
        let hosts = hosts(&["Users.Example.com", ".corp.example"]);
        assert!(hosts.allows("users.example.com"));
        assert!(hosts.allows("USERS.example.com.:443"));
        assert!(!hosts.allows("eviluser.example.com"));
        assert!(hosts.allows("corp.example") && hosts.allows("api.corp.example"));
        assert!(!hosts.allows("notcorp.example"));
        assert!(self::hosts(&["*"]).allows("anything.example"));
    }
}
