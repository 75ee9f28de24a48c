//! SASL authentication mechanisms: PLAIN, SCRAM-SHA-256, SCRAM-SHA-512 and OAUTHBEARER.
//!
//! The mechanisms here do no I/O. A [`SaslConfig`] describes the credentials;
//! [`SaslConfig::start`] begins one authentication exchange and returns a
//! [`SaslSession`], which turns each server message into the next client message.
//! The connection code carries those messages in `SaslAuthenticate` requests:
//!
//! ```
//! # async fn demo() -> Result<(), klife_connection::sasl::SaslError> {
//! use klife_connection::sasl::SaslConfig;
//!
//! let config = SaslConfig::scram_sha512("alice", "alice-secret");
//! let mut session = config.start().await?;
//! let client_first = session.step(None)?;
//! // send `client_first`, read the server's answer, call `step(Some(answer))`,
//! // and so on until `step` returns `Ok(None)`.
//! # let _ = client_first;
//! # Ok(())
//! # }
//! ```
//!
//! Passwords and tokens are kept in [`Secret`], whose `Debug` and `Display` print
//! `<redacted>`; no error message or log line of this module contains them.

mod oauthbearer;
mod plain;
mod scram;
#[cfg(test)]
mod tests;

use std::fmt;
use std::sync::Arc;

pub use oauthbearer::{OAuthToken, TokenFuture, TokenProvider};
pub use scram::{MAX_SCRAM_ITERATIONS, MIN_SCRAM_ITERATIONS};

/// A secret string such as a password or a bearer token.
///
/// `Debug` and `Display` print `<redacted>`. The bytes are overwritten when the
/// value is dropped (best effort: copies made by [`Secret::expose`] callers, or
/// by earlier reallocations of the `String` handed in, are not covered).
#[derive(Clone, Default)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret string.
    pub fn new(secret: impl Into<String>) -> Self {
        Secret(secret.into())
    }

    /// The secret itself. Avoid keeping or logging the returned string.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl From<&str> for Secret {
    fn from(secret: &str) -> Self {
        Secret::new(secret)
    }
}

impl From<String> for Secret {
    fn from(secret: String) -> Self {
        Secret(secret)
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl Drop for Secret {
    fn drop(&mut self) {
        wipe(std::mem::take(&mut self.0).into_bytes());
    }
}

/// Overwrites a buffer holding secret material before it is freed.
pub(crate) fn wipe(mut bytes: Vec<u8>) {
    bytes.iter_mut().for_each(|b| *b = 0);
    // Keeps the writes from being optimised away as dead stores.
    std::hint::black_box(&bytes);
}

/// How to authenticate to the brokers.
///
/// `Debug` never prints passwords or tokens.
#[non_exhaustive]
#[derive(Clone)]
pub enum SaslConfig {
    /// SASL/PLAIN (RFC 4616): the password is sent as is, so use it over TLS only.
    Plain {
        /// The user name.
        username: String,
        /// The password.
        password: Secret,
    },
    /// SCRAM-SHA-256 (RFC 5802, RFC 7677).
    ScramSha256 {
        /// The user name.
        username: String,
        /// The password.
        password: Secret,
    },
    /// SCRAM-SHA-512 (RFC 5802 with SHA-512, as Kafka defines it).
    ScramSha512 {
        /// The user name.
        username: String,
        /// The password.
        password: Secret,
    },
    /// OAUTHBEARER (RFC 7628, KIP-255, KIP-342) with tokens from a [`TokenProvider`].
    OAuthBearer {
        /// Asked for a token at the start of every authentication exchange.
        provider: Arc<dyn TokenProvider>,
    },
}

impl SaslConfig {
    /// SASL/PLAIN with a user name and password.
    pub fn plain(username: impl Into<String>, password: impl Into<Secret>) -> Self {
        SaslConfig::Plain { username: username.into(), password: password.into() }
    }

    /// SCRAM-SHA-256 with a user name and password.
    pub fn scram_sha256(username: impl Into<String>, password: impl Into<Secret>) -> Self {
        SaslConfig::ScramSha256 { username: username.into(), password: password.into() }
    }

    /// SCRAM-SHA-512 with a user name and password.
    pub fn scram_sha512(username: impl Into<String>, password: impl Into<Secret>) -> Self {
        SaslConfig::ScramSha512 { username: username.into(), password: password.into() }
    }

    /// OAUTHBEARER with tokens from `provider`.
    pub fn oauthbearer(provider: impl TokenProvider + 'static) -> Self {
        SaslConfig::OAuthBearer { provider: Arc::new(provider) }
    }

    /// The mechanism's name as sent in `SaslHandshake`: `"PLAIN"`, `"SCRAM-SHA-256"`,
    /// `"SCRAM-SHA-512"` or `"OAUTHBEARER"`.
    pub fn mechanism(&self) -> &'static str {
        match self {
            SaslConfig::Plain { .. } => plain::MECHANISM,
            SaslConfig::ScramSha256 { .. } => scram::ScramHash::Sha256.mechanism(),
            SaslConfig::ScramSha512 { .. } => scram::ScramHash::Sha512.mechanism(),
            SaslConfig::OAuthBearer { .. } => oauthbearer::MECHANISM,
        }
    }

    /// Starts one authentication exchange.
    ///
    /// Credentials are checked here (an empty user name, for instance, is an
    /// [`SaslError::InvalidCredentials`]); OAUTHBEARER asks its provider for a token.
    pub async fn start(&self) -> Result<Box<dyn SaslSession>, SaslError> {
        Ok(match self {
            SaslConfig::Plain { username, password } => Box::new(plain::PlainSession::new(username, password)?),
            SaslConfig::ScramSha256 { username, password } => {
                Box::new(scram::ScramSession::new(scram::ScramHash::Sha256, username, password)?)
            }
            SaslConfig::ScramSha512 { username, password } => {
                Box::new(scram::ScramSession::new(scram::ScramHash::Sha512, username, password)?)
            }
            SaslConfig::OAuthBearer { provider } => {
                let token = provider.token().await.map_err(SaslError::TokenProvider)?;
                Box::new(oauthbearer::OAuthBearerSession::new(token)?)
            }
        })
    }
}

impl fmt::Debug for SaslConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SaslConfig::Plain { username, .. }
            | SaslConfig::ScramSha256 { username, .. }
            | SaslConfig::ScramSha512 { username, .. } => f
                .debug_struct("SaslConfig")
                .field("mechanism", &self.mechanism())
                .field("username", username)
                .field("password", &"<redacted>")
                .finish(),
            SaslConfig::OAuthBearer { provider } => {
                f.debug_struct("SaslConfig").field("mechanism", &self.mechanism()).field("provider", provider).finish()
            }
        }
    }
}

/// One authentication exchange, driven by the caller.
///
/// `step(None)` gives the first client message. Each server answer then goes to
/// `step(Some(server_message))`, which gives the next client message, or `Ok(None)`
/// when the exchange is complete (for SCRAM: once the server's signature has been
/// verified, proving the server knows the password too). After an error the
/// session is finished; start a new one to try again.
///
/// `step` does no I/O, but SCRAM's answer to the server-first message runs PBKDF2
/// with the server's iteration count (4096 with Kafka's defaults, about a millisecond
/// in an optimised build; at most [`MAX_SCRAM_ITERATIONS`]).
pub trait SaslSession: Send {
    /// The mechanism's name, as [`SaslConfig::mechanism`].
    fn mechanism(&self) -> &'static str;

    /// Consumes the server's last message (`None` at the start) and produces the
    /// next client message, or `None` when authentication is complete.
    fn step(&mut self, server: Option<&[u8]>) -> Result<Option<Vec<u8>>, SaslError>;
}

/// Why authentication could not proceed. Messages never contain passwords or tokens.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum SaslError {
    /// The configured credentials cannot be sent with this mechanism.
    #[error("invalid {mechanism} credentials: {reason}")]
    InvalidCredentials {
        /// The SASL mechanism.
        mechanism: &'static str,
        /// What is wrong and how to fix it.
        reason: String,
    },
    /// The server sent a message this mechanism cannot parse.
    #[error("malformed {mechanism} message from the server: {reason}")]
    InvalidServerMessage {
        /// The SASL mechanism.
        mechanism: &'static str,
        /// What is wrong with the message.
        reason: String,
    },
    /// The SCRAM server's nonce does not extend the client's nonce.
    #[error(
        "{mechanism}: the server's nonce does not start with the client's nonce followed by a server part; \
         the server is misbehaving or the exchange was tampered with"
    )]
    NonceMismatch {
        /// The SASL mechanism.
        mechanism: &'static str,
    },
    /// The SCRAM server asked for fewer PBKDF2 iterations than Kafka's minimum.
    #[error(
        "{mechanism}: the server's credentials use {iterations} PBKDF2 iterations, below the minimum of {minimum}; \
         recreate the user's SCRAM credentials with at least {minimum} iterations"
    )]
    IterationCountTooLow {
        /// The SASL mechanism.
        mechanism: &'static str,
        /// The count the server sent.
        iterations: u64,
        /// [`MIN_SCRAM_ITERATIONS`].
        minimum: u32,
    },
    /// The SCRAM server asked for more PBKDF2 iterations than this client spends.
    #[error(
        "{mechanism}: the server's credentials use {iterations} PBKDF2 iterations, above the maximum of {maximum} \
         this client accepts (a bound on the CPU one authentication may take); recreate the user's SCRAM \
         credentials with fewer iterations (Kafka itself allows at most 16384)"
    )]
    IterationCountTooHigh {
        /// The SASL mechanism.
        mechanism: &'static str,
        /// The count the server sent.
        iterations: u64,
        /// [`MAX_SCRAM_ITERATIONS`].
        maximum: u32,
    },
    /// The SCRAM server's final signature is wrong.
    #[error(
        "{mechanism}: the server's signature does not match; the server does not know this user's password \
         (it may not be the broker you meant to reach) or the exchange was tampered with"
    )]
    ServerSignatureMismatch {
        /// The SASL mechanism.
        mechanism: &'static str,
    },
    /// The server reported an error inside the SASL exchange: SCRAM's `e=` attribute,
    /// or OAUTHBEARER's JSON status.
    #[error("{mechanism}: the server rejected the authentication: {message}{hint}", hint = scram::error_hint(.message))]
    ServerError {
        /// The SASL mechanism.
        mechanism: &'static str,
        /// The server's error text as sent.
        message: String,
    },
    /// The OAUTHBEARER token provider failed.
    #[error("OAUTHBEARER: the token provider failed: {0}")]
    TokenProvider(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The OAUTHBEARER token cannot be sent.
    #[error("OAUTHBEARER: invalid token: {reason}")]
    InvalidToken {
        /// What is wrong with it (the token itself is not shown).
        reason: String,
    },
    /// An OAUTHBEARER SASL extension breaks KIP-342's rules.
    #[error("OAUTHBEARER: invalid SASL extension {key:?}: {reason}")]
    InvalidExtension {
        /// The extension's key.
        key: String,
        /// What is wrong (the value is not shown).
        reason: String,
    },
    /// [`SaslSession::step`] was called out of order.
    #[error("{mechanism}: unexpected step: {reason}")]
    UnexpectedStep {
        /// The SASL mechanism.
        mechanism: &'static str,
        /// What was expected.
        reason: &'static str,
    },
    /// The operating system's random number generator failed.
    #[error("cannot generate a random SCRAM nonce: {reason}")]
    Random {
        /// The generator's error.
        reason: String,
    },
}
