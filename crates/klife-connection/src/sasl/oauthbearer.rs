//! OAUTHBEARER (RFC 7628) as Kafka uses it (KIP-255), with SASL extensions (KIP-342).
//!
//! The client sends one message,
//! `n,,\x01auth=Bearer <token>\x01[key=value\x01...]\x01`. An empty server answer means
//! success. A non-empty answer is the server's error, a JSON status such as
//! `{"status":"invalid_token"}`: as RFC 7628 §3.2.3 requires, the session then answers
//! with the single byte `\x01` to end the exchange, and logs the status at debug level.
//! A Kafka broker replies to that byte by failing the `SaslAuthenticate` request with an
//! error message that carries the same status. Should a server answer anything else
//! instead, the next step fails with [`SaslError::ServerError`] holding the status.

use std::error::Error;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::time::SystemTime;

use super::{SaslError, SaslSession, Secret, wipe};

/// The mechanism's name.
pub(super) const MECHANISM: &str = "OAUTHBEARER";

/// The future a [`TokenProvider`] returns.
pub type TokenFuture<'a> = Pin<Box<dyn Future<Output = Result<OAuthToken, Box<dyn Error + Send + Sync>>> + Send + 'a>>;

/// Where OAUTHBEARER tokens come from: typically a client of an identity provider.
///
/// [`SaslConfig::start`](super::SaslConfig::start) calls [`TokenProvider::token`] once per
/// authentication exchange; a provider that fetches tokens over the network should
/// cache them until shortly before they expire. Its `Debug` output appears in the
/// configuration's `Debug`, so it must not print client secrets.
pub trait TokenProvider: Send + Sync + fmt::Debug {
    /// A token that is valid now.
    fn token(&self) -> TokenFuture<'_>;
}

/// A bearer token and what Kafka needs besides it.
///
/// `Debug` does not print the token's value.
#[non_exhaustive]
#[derive(Clone, Debug)]
pub struct OAuthToken {
    /// The token (for instance a JWT), sent as `auth=Bearer <value>`. It must be an
    /// RFC 6750 `b64token`: ASCII letters, digits and `-._~+/`, then optional `=` padding.
    pub value: Secret,
    /// The principal the token was issued for, if known; only informational (the broker
    /// reads the principal from the token itself).
    pub principal: Option<String>,
    /// When the token expires, if known.
    pub expires_at: Option<SystemTime>,
    /// SASL extensions (KIP-342) sent with the token, in order: keys are ASCII
    /// letters and not `auth`; values are printable ASCII, space, tab, CR or LF.
    pub extensions: Vec<(String, String)>,
}

impl OAuthToken {
    /// A token with no principal, expiry or extensions.
    pub fn new(value: impl Into<Secret>) -> Self {
        OAuthToken { value: value.into(), principal: None, expires_at: None, extensions: Vec::new() }
    }

    /// Sets the principal.
    pub fn with_principal(mut self, principal: impl Into<String>) -> Self {
        self.principal = Some(principal.into());
        self
    }

    /// Sets the expiry time.
    pub fn with_expires_at(mut self, expires_at: SystemTime) -> Self {
        self.expires_at = Some(expires_at);
        self
    }

    /// Adds a SASL extension.
    pub fn with_extension(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.extensions.push((key.into(), value.into()));
        self
    }
}

/// An OAUTHBEARER exchange.
pub(super) struct OAuthBearerSession {
    state: State,
}

enum State {
    /// The client message is ready.
    Initial(Vec<u8>),
    /// Sent; waiting for the server's verdict.
    Sent,
    /// The server reported an error and the `\x01` answer was sent.
    ErrorAcknowledged(String),
    /// Complete, or failed.
    Finished,
}

impl OAuthBearerSession {
    /// Checks the token and its extensions and builds the client message.
    pub(super) fn new(token: OAuthToken) -> Result<Self, SaslError> {
        check_token(token.value.expose())?;
        let mut message = Vec::from(&b"n,,\x01auth=Bearer "[..]);
        message.extend_from_slice(token.value.expose().as_bytes());
        message.push(0x01);
        for (key, value) in &token.extensions {
            check_extension(key, value)?;
            message.extend_from_slice(key.as_bytes());
            message.push(b'=');
            message.extend_from_slice(value.as_bytes());
            message.push(0x01);
        }
        message.push(0x01);
        Ok(OAuthBearerSession { state: State::Initial(message) })
    }
}

/// RFC 6750 `b64token = 1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"="`.
fn check_token(token: &str) -> Result<(), SaslError> {
    let body = token.trim_end_matches('=');
    if body.is_empty() {
        return Err(SaslError::InvalidToken { reason: "the token is empty".to_owned() });
    }
    let allowed = |b: u8| b.is_ascii_alphanumeric() || b"-._~+/".contains(&b);
    if let Some(position) = body.bytes().position(|b| !allowed(b)) {
        return Err(SaslError::InvalidToken {
            reason: format!(
                "character {} of {} is not allowed in a bearer token (letters, digits, -._~+/ and trailing =); \
                 check that the provider returns the raw token without a \"Bearer \" prefix or whitespace",
                position + 1,
                token.len()
            ),
        });
    }
    Ok(())
}

/// KIP-342: keys match `[A-Za-z]+` and are not `auth`; values match `[\x21-\x7E \t\r\n]+`.
fn check_extension(key: &str, value: &str) -> Result<(), SaslError> {
    let invalid = |reason: &str| SaslError::InvalidExtension { key: key.to_owned(), reason: reason.to_owned() };
    if key.is_empty() || !key.bytes().all(|b| b.is_ascii_alphabetic()) {
        return Err(invalid("keys must be one or more ASCII letters"));
    }
    if key == "auth" {
        return Err(invalid("the key `auth` is reserved for the token"));
    }
    if value.is_empty() {
        return Err(invalid("the value is empty"));
    }
    if !value.bytes().all(|b| (0x21..=0x7e).contains(&b) || b" \t\r\n".contains(&b)) {
        return Err(invalid("values may hold only printable ASCII, space, tab, CR and LF"));
    }
    Ok(())
}

impl SaslSession for OAuthBearerSession {
    fn mechanism(&self) -> &'static str {
        MECHANISM
    }

    fn step(&mut self, server: Option<&[u8]>) -> Result<Option<Vec<u8>>, SaslError> {
        let unexpected = |reason| SaslError::UnexpectedStep { mechanism: MECHANISM, reason };
        match (std::mem::replace(&mut self.state, State::Finished), server) {
            (State::Initial(message), None) => {
                self.state = State::Sent;
                Ok(Some(message))
            }
            (State::Initial(message), Some(_)) => {
                wipe(message);
                Err(unexpected("the first step takes no server message (the client speaks first)"))
            }
            (State::Sent, Some([])) => Ok(None),
            (State::Sent, Some(error)) => {
                let status = String::from_utf8_lossy(error).into_owned();
                tracing::debug!(%status, "OAUTHBEARER: the server rejected the token; ending the exchange");
                self.state = State::ErrorAcknowledged(status);
                Ok(Some(vec![0x01]))
            }
            (State::ErrorAcknowledged(message), Some(_)) => {
                Err(SaslError::ServerError { mechanism: MECHANISM, message })
            }
            (State::Sent | State::ErrorAcknowledged(_), None) => Err(unexpected("a server message was expected")),
            (State::Finished, _) => Err(unexpected("the exchange is already complete or has failed")),
        }
    }
}

impl Drop for OAuthBearerSession {
    fn drop(&mut self) {
        if let State::Initial(message) = &mut self.state {
            wipe(std::mem::take(message));
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn session(token: OAuthToken) -> OAuthBearerSession {
        OAuthBearerSession::new(token).unwrap()
    }

    #[test]
    fn client_message_without_extensions() {
        let mut s = session(OAuthToken::new("eyJhbGciOi.eyJzdWIiOi.c2ln"));
        assert_eq!(s.mechanism(), "OAUTHBEARER");
        assert_eq!(s.step(None).unwrap().unwrap(), b"n,,\x01auth=Bearer eyJhbGciOi.eyJzdWIiOi.c2ln\x01\x01");
        assert!(s.step(Some(b"")).unwrap().is_none());
        assert!(matches!(s.step(Some(b"")), Err(SaslError::UnexpectedStep { .. })));
    }

    #[test]
    fn client_message_with_extensions_in_order() {
        let token =
            OAuthToken::new("abc==").with_extension("logicalCluster", "lkc-1").with_extension("identityPool", "p 1");
        let mut s = session(token);
        assert_eq!(
            s.step(None).unwrap().unwrap(),
            b"n,,\x01auth=Bearer abc==\x01logicalCluster=lkc-1\x01identityPool=p 1\x01\x01"
        );
    }

    #[test]
    fn server_error_is_acknowledged_then_reported() {
        let mut s = session(OAuthToken::new("tok"));
        s.step(None).unwrap();
        let status = br#"{"status":"invalid_token"}"#;
        assert_eq!(s.step(Some(status)).unwrap().unwrap(), b"\x01");
        let err = s.step(Some(b"")).unwrap_err();
        match &err {
            SaslError::ServerError { mechanism: "OAUTHBEARER", message } => assert_eq!(message.as_bytes(), status),
            other => panic!("unexpected {other:?}"),
        }
        assert!(err.to_string().contains("invalid_token"), "{err}");
        assert!(matches!(s.step(Some(b"")), Err(SaslError::UnexpectedStep { .. })));
    }

    #[test]
    fn invalid_tokens_are_rejected_without_echoing_them() {
        for bad in ["", "===", "Bearer abc", "abc\x01def", "tok en", "abc=def", "ab\ncd"] {
            let err = OAuthBearerSession::new(OAuthToken::new(bad)).err().unwrap();
            assert!(matches!(err, SaslError::InvalidToken { .. }), "{bad:?}: {err}");
            if bad.len() > 3 {
                assert!(!err.to_string().contains(bad), "{err}");
            }
        }
    }

    #[test]
    fn invalid_extensions_are_rejected() {
        let cases =
            [("auth", "x"), ("", "x"), ("key1", "x"), ("ke_y", "x"), ("key", ""), ("key", "a\x01b"), ("key", "é")];
        for (key, value) in cases {
            let token = OAuthToken::new("tok").with_extension(key, value);
            let err = OAuthBearerSession::new(token).err().unwrap();
            assert!(matches!(err, SaslError::InvalidExtension { .. }), "{key:?}={value:?}: {err}");
        }
        let token = OAuthToken::new("tok").with_extension("key", "secret\x01value");
        let err = OAuthBearerSession::new(token).err().unwrap();
        assert!(!err.to_string().contains("secret"), "{err}");
    }

    #[test]
    fn debug_redacts_the_token() {
        let token = OAuthToken::new("very-secret-token").with_principal("alice").with_extension("k", "v");
        let debug = format!("{token:?}");
        assert!(!debug.contains("very-secret-token"), "{debug}");
        assert!(debug.contains("alice") && debug.contains("<redacted>"), "{debug}");
    }
}
