//! The application database's address, `postgres://USER:PASSWORD@HOST:PORT/DATABASE`, in the
//! parts libpq's variables take. Parsed once from `app_database.url`; never shown with its
//! password.

use secrecy::SecretString;

/// The connection, from `app_database.url`, in the parts libpq's variables take.
#[derive(Clone)]
pub struct PgUrl {
    pub host: Option<String>,
    pub port: Option<u16>,
    pub user: Option<String>,
    pub password: Option<SecretString>,
    pub database: String,
}

/// The shape a URL must have, for error messages.
const URL_FORM: &str =
    "use postgres://USER:PASSWORD@HOST:PORT/DATABASE, e.g. postgres://prod_user:PASSWORD@postgres:5432/saas_cafeterias_prod";

fn decode(s: &str) -> Result<String, String> {
    percent_encoding::percent_decode_str(s)
        .decode_utf8()
        .map(|c| c.into_owned())
        .map_err(|_| "its percent-encoding is not UTF-8".to_string())
}

/// Never shows the password.
impl std::fmt::Debug for PgUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("PgUrl").field(&self.target()).finish()
    }
}

impl PgUrl {
    /// Errors never repeat the URL: it may hold a password.
    pub fn parse(raw: &str) -> Result<PgUrl, String> {
        let url = url::Url::parse(raw).map_err(|e| format!("it is not a URL ({e}); {URL_FORM}"))?;
        if !matches!(url.scheme(), "postgres" | "postgresql") {
            return Err(format!(
                "its scheme is {:?}, not postgres or postgresql; {URL_FORM}",
                url.scheme()
            ));
        }
        let mut host = url
            .host_str()
            .filter(|h| !h.is_empty())
            .map(|h| h.trim_matches(['[', ']']).to_string());
        let mut port = url.port();
        for (k, v) in url.query_pairs() {
            match k.as_ref() {
                // libpq's way to name a unix socket folder: postgres:///db?host=/run/postgresql
                "host" => host = Some(v.into_owned()),
                "port" => {
                    port = Some(
                        v.parse()
                            .map_err(|_| format!("its port parameter {v:?} is not a port"))?,
                    )
                }
                other => {
                    return Err(format!(
                        "runbot understands only the host and port parameters, not {other:?}"
                    ))
                }
            }
        }
        let user = match url.username() {
            "" => None,
            u => Some(decode(u)?),
        };
        let password = url
            .password()
            .map(decode)
            .transpose()?
            .map(SecretString::from);
        let database = decode(url.path().trim_start_matches('/'))?;
        if database.is_empty() || database.contains('/') {
            return Err(format!("it must name one database; {URL_FORM}"));
        }
        Ok(PgUrl {
            host,
            port,
            user,
            password,
            database,
        })
    }

    /// `prod_user@postgres:5432/saas_cafeterias_prod`: how replies name it, with no password.
    pub fn target(&self) -> String {
        let user = self
            .user
            .as_deref()
            .map(|u| format!("{u}@"))
            .unwrap_or_default();
        let host = self.host.as_deref().unwrap_or("localhost");
        let port = self.port.map(|p| format!(":{p}")).unwrap_or_default();
        format!("{user}{host}{port}/{}", self.database)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;

    #[test]
    fn urls_are_split_and_their_errors_never_hold_the_password() {
        let c =
            PgUrl::parse("postgres://prod_user:p%40ss@postgres:5432/saas_cafeterias_prod").unwrap();
        assert_eq!(c.user.as_deref(), Some("prod_user"));
        assert_eq!(c.password.as_ref().unwrap().expose_secret(), "p@ss");
        assert_eq!(c.target(), "prod_user@postgres:5432/saas_cafeterias_prod");
        let s = PgUrl::parse("postgresql:///app?host=/run/postgresql").unwrap();
        assert_eq!(s.host.as_deref(), Some("/run/postgresql"));
        for bad in [
            "mysql://u:hunter22@db/app",
            "postgres://u:hunter22@db/",
            "postgres://u:hunter22@db/app?sslmode=require",
            "not a url hunter22",
        ] {
            let e = PgUrl::parse(bad).unwrap_err();
            assert!(!e.contains("hunter22"), "{e}");
        }
    }
}
