//! SCRAM-SHA-256 and SCRAM-SHA-512 (RFC 5802, RFC 7677), client side, without channel binding.
//!
//! The exchange is: client-first `n,,n=<user>,r=<client nonce>`; server-first
//! `r=<nonce>,s=<salt>,i=<iterations>`; client-final `c=biws,r=<nonce>,p=<proof>`;
//! server-final `v=<server signature>` (or `e=<error>`). The session completes only
//! after the server's signature is verified (in constant time).
//!
//! **SASLprep.** RFC 5802 asks for SASLprep (RFC 4013) normalization of user names and
//! passwords. Apache Kafka's client and broker do not apply it: they use the UTF-8
//! bytes of both as given, and the broker derived the stored credentials the same way.
//! This implementation does the same, so non-ASCII passwords work as long as they are
//! typed in the Unicode normalization form they were registered with. In the user name
//! `=` and `,` are escaped as `=3D` and `=2C`; an empty user name or one containing NUL
//! is rejected.

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};
use hmac::digest::KeyInit;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256, Sha512};

use super::{SaslError, SaslSession, Secret, wipe};

/// The fewest PBKDF2 iterations accepted from a server: 4096, Kafka's minimum
/// (and RFC 7677's recommendation).
pub const MIN_SCRAM_ITERATIONS: u32 = 4096;

/// The most PBKDF2 iterations accepted from a server: 1,000,000. Kafka creates
/// credentials with at most 16384; the bound keeps a hostile or misconfigured server
/// from making one authentication burn seconds of CPU.
pub const MAX_SCRAM_ITERATIONS: u32 = 1_000_000;

/// Random bytes in a client nonce (base64-encoded on the wire).
const NONCE_BYTES: usize = 32;

/// `base64("n,,")`: the GS2 header of a client without channel binding.
const CHANNEL_BINDING: &str = "biws";

/// The hash function behind a SCRAM mechanism.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ScramHash {
    /// SCRAM-SHA-256.
    Sha256,
    /// SCRAM-SHA-512.
    Sha512,
}

impl ScramHash {
    /// The SASL mechanism name.
    pub(crate) fn mechanism(self) -> &'static str {
        match self {
            ScramHash::Sha256 => "SCRAM-SHA-256",
            ScramHash::Sha512 => "SCRAM-SHA-512",
        }
    }

    /// `H(data)`.
    fn hash(self, data: &[u8]) -> Vec<u8> {
        match self {
            ScramHash::Sha256 => Sha256::digest(data).to_vec(),
            ScramHash::Sha512 => Sha512::digest(data).to_vec(),
        }
    }

    /// `HMAC(key, data)`.
    fn hmac(self, key: &[u8], data: &[u8]) -> Vec<u8> {
        match self {
            ScramHash::Sha256 => hmac_new::<Hmac<Sha256>>(key, data).finalize().into_bytes().to_vec(),
            ScramHash::Sha512 => hmac_new::<Hmac<Sha512>>(key, data).finalize().into_bytes().to_vec(),
        }
    }

    /// Whether `HMAC(key, data) == expected`, compared in constant time.
    fn hmac_verify(self, key: &[u8], data: &[u8], expected: &[u8]) -> bool {
        match self {
            ScramHash::Sha256 => hmac_new::<Hmac<Sha256>>(key, data).verify_slice(expected).is_ok(),
            ScramHash::Sha512 => hmac_new::<Hmac<Sha512>>(key, data).verify_slice(expected).is_ok(),
        }
    }

    /// `Hi(password, salt, iterations)`: PBKDF2 with this hash's HMAC.
    fn salted_password(self, password: &[u8], salt: &[u8], iterations: u32) -> Vec<u8> {
        match self {
            ScramHash::Sha256 => {
                let mut out = vec![0; 32];
                pbkdf2::pbkdf2_hmac::<Sha256>(password, salt, iterations, &mut out);
                out
            }
            ScramHash::Sha512 => {
                let mut out = vec![0; 64];
                pbkdf2::pbkdf2_hmac::<Sha512>(password, salt, iterations, &mut out);
                out
            }
        }
    }
}

/// An HMAC keyed with `key` that has absorbed `data`.
fn hmac_new<M: Mac + KeyInit>(key: &[u8], data: &[u8]) -> M {
    #[allow(clippy::expect_used)]
    let mut mac = <M as KeyInit>::new_from_slice(key).expect("HMAC takes keys of any length");
    mac.update(data);
    mac
}

/// Key material that is wiped when dropped.
#[derive(Clone)]
struct KeyBytes(Vec<u8>);

impl Drop for KeyBytes {
    fn drop(&mut self) {
        wipe(std::mem::take(&mut self.0));
    }
}

/// A SCRAM exchange in progress.
#[derive(Clone)]
pub(crate) struct ScramSession {
    hash: ScramHash,
    state: State,
}

#[derive(Clone)]
enum State {
    /// Nothing sent yet.
    Initial { client_first_bare: String, client_nonce: String, password: Secret },
    /// The client-first message was sent.
    SentClientFirst { client_first_bare: String, client_nonce: String, password: Secret },
    /// The client-final message was sent; waiting to verify the server's signature.
    SentClientFinal { server_key: KeyBytes, auth_message: String },
    /// Authenticated, or failed: no more steps.
    Finished,
}

impl ScramSession {
    /// Starts an exchange with a fresh random nonce.
    pub(crate) fn new(hash: ScramHash, username: &str, password: &Secret) -> Result<Self, SaslError> {
        let mut random = [0u8; NONCE_BYTES];
        getrandom::getrandom(&mut random).map_err(|e| SaslError::Random { reason: e.to_string() })?;
        Self::with_nonce(hash, username, password, STANDARD_NO_PAD.encode(random))
    }

    /// Starts an exchange with the given client nonce (printable ASCII without commas).
    pub(crate) fn with_nonce(
        hash: ScramHash,
        username: &str,
        password: &Secret,
        client_nonce: String,
    ) -> Result<Self, SaslError> {
        let mechanism = hash.mechanism();
        let invalid = |reason: &str| SaslError::InvalidCredentials { mechanism, reason: reason.to_owned() };
        if username.is_empty() {
            return Err(invalid("the user name is empty"));
        }
        if username.contains('\0') {
            return Err(invalid("the user name contains a NUL character"));
        }
        let client_first_bare = format!("n={},r={client_nonce}", escape_username(username));
        Ok(ScramSession { hash, state: State::Initial { client_first_bare, client_nonce, password: password.clone() } })
    }

    fn malformed(&self, reason: impl Into<String>) -> SaslError {
        SaslError::InvalidServerMessage { mechanism: self.hash.mechanism(), reason: reason.into() }
    }

    /// Parses the server-first message and builds the client-final message.
    fn client_final(
        &self,
        server_first: &[u8],
        client_first_bare: &str,
        client_nonce: &str,
        password: &Secret,
    ) -> Result<(Vec<u8>, State), SaslError> {
        let mechanism = self.hash.mechanism();
        let server_first =
            std::str::from_utf8(server_first).map_err(|_| self.malformed("server-first message is not UTF-8"))?;
        let mut attributes = server_first.split(',');
        let mut next = |name: &str| {
            let attribute = attributes.next().unwrap_or("");
            match attribute.strip_prefix(name).and_then(|a| a.strip_prefix('=')) {
                Some(value) => Ok(value),
                None if attribute.starts_with("e=") => {
                    Err(SaslError::ServerError { mechanism, message: attribute.trim_start_matches("e=").to_owned() })
                }
                None if attribute.starts_with("m=") => Err(self.malformed(
                    "the server requires a mandatory SCRAM extension (m=), which this client does not support",
                )),
                None => Err(self.malformed(format!(
                    "expected the {name}= attribute in the server-first message, found {:?}",
                    truncate(attribute)
                ))),
            }
        };
        let nonce = next("r")?;
        let salt = next("s")?;
        let iterations = next("i")?;
        // Anything after i= is an optional extension, which clients ignore.

        if !nonce.bytes().all(|b| (0x21..=0x7e).contains(&b)) {
            return Err(self.malformed("the nonce has characters outside printable ASCII"));
        }
        if nonce.len() <= client_nonce.len() || !nonce.starts_with(client_nonce) {
            return Err(SaslError::NonceMismatch { mechanism });
        }
        let salt = STANDARD.decode(salt).map_err(|e| self.malformed(format!("the salt is not valid base64: {e}")))?;
        if salt.is_empty() {
            return Err(self.malformed("the salt is empty"));
        }
        if iterations.is_empty() || !iterations.bytes().all(|b| b.is_ascii_digit()) {
            return Err(self.malformed(format!("the iteration count {:?} is not a number", truncate(iterations))));
        }
        // All digits: the only parse failure left is overflow.
        let count = iterations.parse::<u64>().unwrap_or(u64::MAX);
        if count < u64::from(MIN_SCRAM_ITERATIONS) {
            return Err(SaslError::IterationCountTooLow {
                mechanism,
                iterations: count,
                minimum: MIN_SCRAM_ITERATIONS,
            });
        }
        let count = match u32::try_from(count) {
            Ok(count) if count <= MAX_SCRAM_ITERATIONS => count,
            _ => {
                return Err(SaslError::IterationCountTooHigh {
                    mechanism,
                    iterations: count,
                    maximum: MAX_SCRAM_ITERATIONS,
                });
            }
        };

        let hash = self.hash;
        let salted_password = KeyBytes(hash.salted_password(password.expose().as_bytes(), &salt, count));
        let client_key = KeyBytes(hash.hmac(&salted_password.0, b"Client Key"));
        let stored_key = KeyBytes(hash.hash(&client_key.0));
        let server_key = KeyBytes(hash.hmac(&salted_password.0, b"Server Key"));

        let without_proof = format!("c={CHANNEL_BINDING},r={nonce}");
        let auth_message = format!("{client_first_bare},{server_first},{without_proof}");
        let client_signature = KeyBytes(hash.hmac(&stored_key.0, auth_message.as_bytes()));
        let proof: Vec<u8> = client_key.0.iter().zip(&client_signature.0).map(|(k, s)| k ^ s).collect();
        let message = format!("{without_proof},p={}", STANDARD.encode(&proof));
        Ok((message.into_bytes(), State::SentClientFinal { server_key, auth_message }))
    }

    /// Checks the server-final message.
    fn verify_server_final(
        &self,
        server_final: &[u8],
        server_key: &KeyBytes,
        auth_message: &str,
    ) -> Result<(), SaslError> {
        let mechanism = self.hash.mechanism();
        let server_final =
            std::str::from_utf8(server_final).map_err(|_| self.malformed("server-final message is not UTF-8"))?;
        let first = server_final.split(',').next().unwrap_or("");
        if let Some(error) = first.strip_prefix("e=") {
            return Err(SaslError::ServerError { mechanism, message: error.to_owned() });
        }
        let Some(verifier) = first.strip_prefix("v=") else {
            return Err(
                self.malformed(format!("expected v= or e= in the server-final message, found {:?}", truncate(first)))
            );
        };
        let signature = STANDARD
            .decode(verifier)
            .map_err(|e| self.malformed(format!("the server signature is not valid base64: {e}")))?;
        if self.hash.hmac_verify(&server_key.0, auth_message.as_bytes(), &signature) {
            Ok(())
        } else {
            Err(SaslError::ServerSignatureMismatch { mechanism })
        }
    }
}

impl SaslSession for ScramSession {
    fn mechanism(&self) -> &'static str {
        self.hash.mechanism()
    }

    fn step(&mut self, server: Option<&[u8]>) -> Result<Option<Vec<u8>>, SaslError> {
        let mechanism = self.hash.mechanism();
        let unexpected = |reason| SaslError::UnexpectedStep { mechanism, reason };
        // Any error finishes the session: leave `Finished` in place unless a step succeeds.
        match (std::mem::replace(&mut self.state, State::Finished), server) {
            (State::Initial { client_first_bare, client_nonce, password }, None) => {
                let message = format!("n,,{client_first_bare}").into_bytes();
                self.state = State::SentClientFirst { client_first_bare, client_nonce, password };
                Ok(Some(message))
            }
            (State::Initial { .. }, Some(_)) => {
                Err(unexpected("the first step takes no server message (the client speaks first)"))
            }
            (State::SentClientFirst { client_first_bare, client_nonce, password }, Some(server_first)) => {
                let (message, next) = self.client_final(server_first, &client_first_bare, &client_nonce, &password)?;
                self.state = next;
                Ok(Some(message))
            }
            (State::SentClientFinal { server_key, auth_message }, Some(server_final)) => {
                self.verify_server_final(server_final, &server_key, &auth_message)?;
                Ok(None)
            }
            (State::SentClientFirst { .. } | State::SentClientFinal { .. }, None) => {
                Err(unexpected("a server message was expected"))
            }
            (State::Finished, _) => Err(unexpected("the exchange is already complete or has failed")),
        }
    }
}

/// Escapes a user name for `n=`: `=` becomes `=3D` and `,` becomes `=2C` (RFC 5802 §5.1).
fn escape_username(username: &str) -> String {
    let mut escaped = String::with_capacity(username.len());
    for c in username.chars() {
        match c {
            '=' => escaped.push_str("=3D"),
            ',' => escaped.push_str("=2C"),
            c => escaped.push(c),
        }
    }
    escaped
}

/// At most 64 characters of server-supplied text, for error messages.
fn truncate(text: &str) -> &str {
    match text.char_indices().nth(64) {
        Some((end, _)) => &text[..end],
        None => text,
    }
}

/// Extra advice for the standard SCRAM `e=` values (RFC 5802 §7), shown after the server's text.
pub(super) fn error_hint(message: &str) -> &'static str {
    match message {
        "invalid-proof" => " (wrong password for this user)",
        "unknown-user" => " (the broker has no SCRAM credentials for this user and mechanism)",
        "invalid-username-encoding" | "invalid-encoding" => " (the server could not decode the user name)",
        "other-error" => " (see the broker's log)",
        _ => "",
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn username_escaping() {
        assert_eq!(escape_username("a=b,c"), "a=3Db=2Cc");
        assert_eq!(escape_username("plain"), "plain");
        assert_eq!(escape_username("ünï"), "ünï");
    }

    #[test]
    fn random_nonces_are_printable_and_distinct() {
        let nonce = |s: &ScramSession| match &s.state {
            State::Initial { client_nonce, .. } => client_nonce.clone(),
            _ => unreachable!(),
        };
        let a = ScramSession::new(ScramHash::Sha256, "u", &Secret::new("p")).unwrap();
        let b = ScramSession::new(ScramHash::Sha256, "u", &Secret::new("p")).unwrap();
        let (a, b) = (nonce(&a), nonce(&b));
        assert_ne!(a, b);
        assert!(a.len() >= 32, "{a}");
        assert!(a.bytes().all(|c| (0x21..=0x7e).contains(&c) && c != b','));
    }

    #[test]
    fn truncate_is_char_safe() {
        let long = "é".repeat(100);
        assert_eq!(truncate(&long).chars().count(), 64);
        assert_eq!(truncate("short"), "short");
    }
}
