//! Names of things outside runbot that settings and commands give: the Docker engine's
//! address, a compose project, a compose service.

use std::fmt;

/// Where the engine listens: `unix:///var/run/docker.sock`, `tcp://HOST:PORT`, `http://HOST:PORT`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DockerHost {
    Unix(String),
    /// `HOST:PORT`, spoken to in plain HTTP.
    Http(String),
}

impl DockerHost {
    pub const DEFAULT: &'static str = "unix:///var/run/docker.sock";
    pub const FORM: &'static str =
        "use unix:///path/to/docker.sock, tcp://HOST:PORT or http://HOST:PORT (default unix:///var/run/docker.sock)";

    pub fn parse(s: &str) -> Result<DockerHost, String> {
        if let Some(path) = s.strip_prefix("unix://") {
            if !path.starts_with('/') || path.len() < 2 {
                return Err("a unix socket needs an absolute path".into());
            }
            return Ok(DockerHost::Unix(path.to_string()));
        }
        if s.starts_with("https://") {
            return Err("TLS connections are not supported".into());
        }
        let Some(addr) = s
            .strip_prefix("tcp://")
            .or_else(|| s.strip_prefix("http://"))
        else {
            return Err("unknown scheme".into());
        };
        let addr = addr.trim_end_matches('/');
        let valid = addr.rsplit_once(':').is_some_and(|(host, port)| {
            !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0)
        }) && !addr.contains(['/', '@', '?', '#', ' ']);
        if !valid {
            return Err("expected HOST:PORT after the scheme".into());
        }
        Ok(DockerHost::Http(addr.to_string()))
    }
}

impl fmt::Display for DockerHost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DockerHost::Unix(path) => write!(f, "unix://{path}"),
            DockerHost::Http(addr) => write!(f, "tcp://{addr}"),
        }
    }
}

/// A docker-compose project name, as compose accepts it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProjectName(String);

impl ProjectName {
    pub const FORM: &'static str =
        "lowercase letters, digits, - and _, starting with a letter or digit (`docker compose ls` lists the projects)";

    pub fn parse(s: &str) -> Result<ProjectName, String> {
        let ok = s.len() <= 128
            && s.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
        if ok {
            Ok(ProjectName(s.to_string()))
        } else {
            Err(Self::FORM.into())
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ProjectName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A compose service name, as `deploy.services` and `/restart service:` give it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceName(String);

impl ServiceName {
    pub fn parse(s: &str) -> Option<ServiceName> {
        let ok = !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b));
        ok.then(|| ServiceName(s.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ServiceName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
