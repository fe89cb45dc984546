//! Logging in to NATS: the servers' URLs (comma separated) with or without credentials in them
//! (`nats://user:password@host`, `nats://token@host`), or credentials given beside them (user
//! and password, a token, an NKey seed file, a credentials file). async-nats ignores credentials
//! embedded in a URL, so they are taken out of the URLs here and set on the connection
//! explicitly; the URLs it is given carry none. Secrets never show: the URLs display with
//! `***` in their place, and `Debug` prints no secret.
//!
//! TLS ([`Tls`], [`tls`]): `tls://` URLs require it; a CA file to trust (a private CA, besides
//! the system's roots) and a client certificate and key (mutual TLS) can be given, and giving any
//! of them requires TLS of every server too.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use async_nats::{ConnectOptions, ServerAddr};

#[derive(Debug, thiserror::Error)]
pub enum ConnectionError {
    #[error("no NATS server url given")]
    NoServer,
    #[error("nats url {position} of the list: {problem}")]
    InvalidUrl { position: usize, problem: String },
    #[error("the nats urls carry different credentials; give the same ones to every server, or none")]
    DifferentCredentials,
    #[error("more than one way to log in to NATS: {0} and {1}; give one")]
    Conflicting(&'static str, &'static str),
    #[error("a NATS user needs a password, and a password a user")]
    Incomplete,
    #[error("cannot read the NKey seed file {path}: {source}")]
    SeedFile { path: PathBuf, source: std::io::Error },
    #[error("the NKey seed file {path} holds no user NKey seed (it starts with SU)")]
    InvalidSeed { path: PathBuf },
    #[error("cannot read the NATS credentials file {path}: {source}")]
    CredsFile { path: PathBuf, source: std::io::Error },
    #[error("cannot read the NATS TLS {what} file {path}: {source}")]
    TlsFile { what: &'static str, path: PathBuf, source: std::io::Error },
    #[error("a NATS TLS client certificate needs its key, and a key its certificate")]
    TlsIncomplete,
}

/// A secret (a password, a token): kept out of `Debug` and `Display`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(secret: impl Into<String>) -> Self {
        Self(secret.into())
    }

    /// The secret itself, for the connection only.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

/// Any text: a command-line value kept secret until it is parsed (clap shows a value it cannot
/// parse in its error, which must not show a password).
impl FromStr for Secret {
    type Err = std::convert::Infallible;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Ok(Self(text.to_owned()))
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"***\"")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// A way to log in.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Login {
    UserPassword { user: String, password: Secret },
    Token(Secret),
}

/// One or more NATS server URLs, comma separated, possibly with credentials in them. Displays
/// (and debugs) with the secrets replaced by `***`.
#[derive(Clone, PartialEq, Eq)]
pub struct NatsUrl {
    /// The servers, without credentials.
    servers: Vec<ServerAddr>,
    /// The credentials the URLs carry (the same in each URL that carries any).
    login: Option<Login>,
    /// The URLs as they may be shown.
    redacted: String,
}

impl NatsUrl {
    /// The servers, without credentials.
    pub fn servers(&self) -> &[ServerAddr] {
        &self.servers
    }

    /// Whether the URLs carry credentials.
    pub fn has_credentials(&self) -> bool {
        self.login.is_some()
    }
}

impl FromStr for NatsUrl {
    type Err = ConnectionError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let mut servers = Vec::new();
        let mut shown = Vec::new();
        let mut login: Option<Login> = None;
        for (i, part) in text.split(',').map(str::trim).filter(|p| !p.is_empty()).enumerate() {
            let invalid = |problem: String| ConnectionError::InvalidUrl { position: i + 1, problem };
            // async-nats's parse error names the problem, never the input.
            let addr: ServerAddr = part.parse().map_err(|e: std::io::Error| invalid(e.to_string()))?;
            let mut url = addr.into_inner();
            let found = match (url.username(), url.password()) {
                ("", None) => None,
                ("", Some(_)) => return Err(invalid("a password without a user".into())),
                (user, Some(password)) => Some(Login::UserPassword {
                    user: percent_decode(user).map_err(invalid)?,
                    password: Secret(percent_decode(password).map_err(invalid)?),
                }),
                (token, None) => Some(Login::Token(Secret(percent_decode(token).map_err(invalid)?))),
            };
            let mut redacted = url.clone();
            if let Some(found) = found {
                let shown_user = match &found {
                    Login::UserPassword { .. } => None,
                    Login::Token(_) => Some("***"),
                };
                let cleared = match shown_user {
                    Some(placeholder) => redacted.set_username(placeholder),
                    None => redacted.set_password(Some("***")),
                };
                cleared.map_err(|()| invalid("credentials in a url that cannot have any".into()))?;
                match &login {
                    Some(earlier) if *earlier != found => return Err(ConnectionError::DifferentCredentials),
                    Some(_) => {}
                    None => login = Some(found),
                }
                let stripped = url.set_username("").and_then(|()| url.set_password(None));
                stripped.map_err(|()| invalid("credentials in a url that cannot have any".into()))?;
            }
            shown.push(redacted.as_str().trim_end_matches('/').to_owned());
            servers.push(ServerAddr::from_url(url).map_err(|e| invalid(e.to_string()))?);
        }
        if servers.is_empty() {
            return Err(ConnectionError::NoServer);
        }
        Ok(Self { servers, login, redacted: shown.join(",") })
    }
}

impl fmt::Display for NatsUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted)
    }
}

impl fmt::Debug for NatsUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NatsUrl({:?})", self.redacted)
    }
}

/// Decodes the `%XX` escapes of a URL's user or password.
fn percent_decode(text: &str) -> Result<String, String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3).and_then(|h| std::str::from_utf8(h).ok());
            let byte = hex.and_then(|h| u8::from_str_radix(h, 16).ok());
            let Some(byte) = byte else { return Err("a broken %-escape in the credentials".into()) };
            out.push(byte);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| "credentials that are not UTF-8 once %-decoded".into())
}

/// Credentials given beside the URL (config file, flags, environment).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Credentials {
    pub user: Option<String>,
    pub password: Option<Secret>,
    pub token: Option<Secret>,
    /// A file holding a user NKey seed (`SU...`).
    pub nkey_seed_file: Option<PathBuf>,
    /// A credentials file (JWT and NKey seed).
    pub creds_file: Option<PathBuf>,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("user", &self.user)
            .field("password", &self.password)
            .field("token", &self.token)
            .field("nkey_seed_file", &self.nkey_seed_file)
            .field("creds_file", &self.creds_file)
            .finish()
    }
}

/// How a connection logs in, as it may be logged (no secret).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoginKind {
    None,
    User(String),
    Token,
    /// The NKey's public key.
    NKey(String),
    CredsFile(PathBuf),
}

impl fmt::Display for LoginKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::None => f.write_str("no credentials"),
            Self::User(user) => write!(f, "user {user}"),
            Self::Token => f.write_str("a token"),
            Self::NKey(public) => write!(f, "NKey {public}"),
            Self::CredsFile(path) => write!(f, "credentials file {}", path.display()),
        }
    }
}

/// `options` set to log in as `url` and `credentials` say (at most one way between them), and the
/// login as it may be logged. Connect them to [`NatsUrl::servers`].
pub async fn login(
    url: &NatsUrl,
    credentials: &Credentials,
    options: ConnectOptions,
) -> Result<(ConnectOptions, LoginKind), ConnectionError> {
    let given: Vec<&'static str> = [
        (url.login.is_some(), "credentials in the url"),
        (credentials.user.is_some() || credentials.password.is_some(), "a user and password"),
        (credentials.token.is_some(), "a token"),
        (credentials.nkey_seed_file.is_some(), "an NKey seed file"),
        (credentials.creds_file.is_some(), "a credentials file"),
    ]
    .into_iter()
    .filter_map(|(given, what)| given.then_some(what))
    .collect();
    if let [first, second, ..] = given[..] {
        return Err(ConnectionError::Conflicting(first, second));
    }
    let (options, kind) = if let Some(login) = &url.login {
        match login {
            Login::UserPassword { user, password } => {
                (options.user_and_password(user.clone(), password.expose().to_owned()), LoginKind::User(user.clone()))
            }
            Login::Token(token) => (options.token(token.expose().to_owned()), LoginKind::Token),
        }
    } else if credentials.user.is_some() || credentials.password.is_some() {
        let (Some(user), Some(password)) = (&credentials.user, &credentials.password) else {
            return Err(ConnectionError::Incomplete);
        };
        (options.user_and_password(user.clone(), password.expose().to_owned()), LoginKind::User(user.clone()))
    } else if let Some(token) = &credentials.token {
        (options.token(token.expose().to_owned()), LoginKind::Token)
    } else if let Some(path) = &credentials.nkey_seed_file {
        let (seed, public) = read_seed(path)?;
        (options.nkey(seed), LoginKind::NKey(public))
    } else if let Some(path) = &credentials.creds_file {
        let options = options
            .credentials_file(path)
            .await
            .map_err(|source| ConnectionError::CredsFile { path: path.clone(), source })?;
        (options, LoginKind::CredsFile(path.clone()))
    } else {
        (options, LoginKind::None)
    };
    Ok((options, kind))
}

/// A user NKey seed from its file, checked, and its public key.
fn read_seed(path: &Path) -> Result<(String, String), ConnectionError> {
    let text =
        std::fs::read_to_string(path).map_err(|source| ConnectionError::SeedFile { path: path.to_owned(), source })?;
    let invalid = || ConnectionError::InvalidSeed { path: path.to_owned() };
    // The seed may come with comments or other lines (as `nsc` writes them): the one line that is a seed.
    let seed = text.lines().map(str::trim).find(|l| l.starts_with("SU")).ok_or_else(invalid)?;
    let pair = nkeys::KeyPair::from_seed(seed).map_err(|_| invalid())?;
    Ok((seed.to_owned(), pair.public_key()))
}

/// TLS on the connections to NATS.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tls {
    /// A PEM file of the CA certificate(s) to trust, besides the system's roots (a private CA).
    pub ca_file: Option<PathBuf>,
    /// A PEM client certificate, for servers that verify clients (mutual TLS); with `key_file`.
    pub cert_file: Option<PathBuf>,
    /// The client certificate's PEM private key.
    pub key_file: Option<PathBuf>,
}

impl Tls {
    /// Whether any TLS file is given.
    pub fn is_configured(&self) -> bool {
        self.ca_file.is_some() || self.cert_file.is_some() || self.key_file.is_some()
    }
}

/// `options` set up for TLS as `url` and `tls` say: required when a URL is `tls://` or a TLS
/// file is given, trusting the CA file and presenting the client certificate. The files are
/// checked here, so a wrong path is a clear error before any connection attempt.
pub fn tls(url: &NatsUrl, tls: &Tls, options: ConnectOptions) -> Result<ConnectOptions, ConnectionError> {
    let readable = |what: &'static str, path: &Path| {
        std::fs::File::open(path).map(|_| ()).map_err(|source| ConnectionError::TlsFile {
            what,
            path: path.to_owned(),
            source,
        })
    };
    let mut options = options;
    if let Some(ca) = &tls.ca_file {
        readable("CA", ca)?;
        options = options.add_root_certificates(ca.clone());
    }
    match (&tls.cert_file, &tls.key_file) {
        (Some(cert), Some(key)) => {
            readable("client certificate", cert)?;
            readable("client key", key)?;
            options = options.add_client_certificate(cert.clone(), key.clone());
        }
        (None, None) => {}
        (Some(_), None) | (None, Some(_)) => return Err(ConnectionError::TlsIncomplete),
    }
    let required = tls.is_configured() || url.servers().iter().any(ServerAddr::tls_required);
    Ok(if required { options.require_tls(true) } else { options })
}

/// Whether an async-nats connection event says the server refused the login (wrong or missing
/// credentials). async-nats reports a refused attempt, while it keeps retrying, as a client
/// error carrying the connect error's text.
pub fn is_login_refused(event: &async_nats::Event) -> Option<String> {
    let async_nats::Event::ClientError(async_nats::ClientError::Other(text)) = event else { return None };
    let refused = [async_nats::ConnectErrorKind::AuthorizationViolation, async_nats::ConnectErrorKind::Authentication]
        .iter()
        .any(|kind| *text == kind.to_string());
    refused.then(|| text.clone())
}

#[cfg(test)]
mod tests;
