//! SASL tests: RFC 7677's SCRAM-SHA-256 example, full exchanges against the `sasl`
//! crate's independent server implementation, and hostile server messages.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::LazyLock;
use std::sync::atomic::{AtomicUsize, Ordering};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::digest::KeyInit;
use hmac::{Hmac, Mac};
use sasl::common::scram::{DeriveError, ScramProvider, Sha256 as ServerSha256};
use sasl::common::{ChannelBinding, Identity, Password};
use sasl::server::mechanisms::{Plain as PlainServer, Scram as ScramServer};
use sasl::server::{Mechanism, MechanismError, Provider, ProviderError, Response, Validator, ValidatorError};
use sha2::{Digest, Sha512};

use super::scram::{ScramHash, ScramSession};
use super::*;

const RFC_NONCE: &str = "rOprNGfwEbeRWgbNEkqO";
const RFC_SERVER_FIRST: &str = "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096";
const RFC_CLIENT_FINAL: &str =
    "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=";
const RFC_SERVER_FINAL: &str = "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=";

fn rfc_session() -> ScramSession {
    ScramSession::with_nonce(ScramHash::Sha256, "user", &Secret::new("pencil"), RFC_NONCE.to_owned()).unwrap()
}

/// A session that has sent its client-first message.
fn rfc_session_after_first() -> ScramSession {
    let mut session = rfc_session();
    session.step(None).unwrap();
    session
}

/// A session that has sent its client-final message for RFC 7677's exchange
/// (built once: PBKDF2 is slow in unoptimised test builds).
fn rfc_session_after_final() -> ScramSession {
    static SESSION: LazyLock<ScramSession> = LazyLock::new(|| {
        let mut session = rfc_session_after_first();
        session.step(Some(RFC_SERVER_FIRST.as_bytes())).unwrap();
        session
    });
    SESSION.clone()
}

#[test]
fn rfc7677_scram_sha256_example() {
    let mut session = rfc_session();
    assert_eq!(session.mechanism(), "SCRAM-SHA-256");
    assert_eq!(session.step(None).unwrap().unwrap(), b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO");
    let client_final = session.step(Some(RFC_SERVER_FIRST.as_bytes())).unwrap().unwrap();
    assert_eq!(String::from_utf8(client_final).unwrap(), RFC_CLIENT_FINAL);
    assert!(session.step(Some(RFC_SERVER_FINAL.as_bytes())).unwrap().is_none());
    assert!(matches!(session.step(Some(b"")), Err(SaslError::UnexpectedStep { .. })));
}

#[test]
fn scram_tampered_server_signature() {
    let mut bytes = STANDARD.decode(&RFC_SERVER_FINAL[2..]).unwrap();
    bytes[7] ^= 1;
    for tampered in
        [format!("v={}", STANDARD.encode(&bytes)), format!("v={}", STANDARD.encode(&bytes[..31])), "v=".to_owned()]
    {
        let err = rfc_session_after_final().step(Some(tampered.as_bytes())).unwrap_err();
        assert!(matches!(err, SaslError::ServerSignatureMismatch { mechanism: "SCRAM-SHA-256" }), "{err}");
        assert!(err.to_string().contains("signature"), "{err}");
    }
}

#[test]
fn scram_server_error_attribute() {
    let err = rfc_session_after_final().step(Some(b"e=invalid-proof")).unwrap_err();
    assert!(matches!(&err, SaslError::ServerError { message, .. } if message == "invalid-proof"), "{err}");
    assert!(err.to_string().contains("wrong password"), "{err}");

    let err = rfc_session_after_first().step(Some(b"e=unknown-user")).unwrap_err();
    assert!(matches!(&err, SaslError::ServerError { message, .. } if message == "unknown-user"), "{err}");
}

#[test]
fn scram_nonce_mismatch() {
    for server_first in [
        "r=somethingElse123,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096",
        "r=rOprNGfwEbeRWgbNEkq,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096",
        // The server must add its own part.
        "r=rOprNGfwEbeRWgbNEkqO,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096",
    ] {
        let err = rfc_session_after_first().step(Some(server_first.as_bytes())).unwrap_err();
        assert!(matches!(err, SaslError::NonceMismatch { .. }), "{server_first}: {err}");
    }
}

#[test]
fn scram_iteration_count_bounds() {
    let first = |i: &str| format!("r={RFC_NONCE}xyz,s=W22ZaJ0SNY7soEsUEjb6gQ==,i={i}");
    for low in ["0", "1", "4095"] {
        let err = rfc_session_after_first().step(Some(first(low).as_bytes())).unwrap_err();
        assert!(matches!(err, SaslError::IterationCountTooLow { minimum: 4096, .. }), "{low}: {err}");
        assert!(err.to_string().contains("4096"), "{err}");
    }
    for high in ["1000001", "4294967296", "99999999999999999999999999"] {
        let err = rfc_session_after_first().step(Some(first(high).as_bytes())).unwrap_err();
        assert!(matches!(err, SaslError::IterationCountTooHigh { maximum: 1_000_000, .. }), "{high}: {err}");
    }
}

#[test]
fn scram_malformed_server_first() {
    let salt = "W22ZaJ0SNY7soEsUEjb6gQ==";
    let cases: Vec<Vec<u8>> = vec![
        b"".to_vec(),
        b"garbage".to_vec(),
        format!("r={RFC_NONCE}x").into_bytes(),
        format!("r={RFC_NONCE}x,s={salt}").into_bytes(),
        format!("s={salt},r={RFC_NONCE}x,i=4096").into_bytes(),
        format!("r={RFC_NONCE}x,s=!!notbase64,i=4096").into_bytes(),
        format!("r={RFC_NONCE}x,s=,i=4096").into_bytes(),
        format!("r={RFC_NONCE}x,s={salt},i=").into_bytes(),
        format!("r={RFC_NONCE}x,s={salt},i=-4096").into_bytes(),
        format!("r={RFC_NONCE}x,s={salt},i=4096abc").into_bytes(),
        format!("r={RFC_NONCE}x y,s={salt},i=4096").into_bytes(),
        format!("m=ext,r={RFC_NONCE}x,s={salt},i=4096").into_bytes(),
        [b"r=".as_slice(), RFC_NONCE.as_bytes(), b"\xff,s=", salt.as_bytes(), b",i=4096"].concat(),
    ];
    for case in cases {
        let err = rfc_session_after_first().step(Some(&case)).unwrap_err();
        assert!(
            matches!(err, SaslError::InvalidServerMessage { mechanism: "SCRAM-SHA-256", .. }),
            "{:?}: {err}",
            String::from_utf8_lossy(&case)
        );
    }
}

#[test]
fn scram_extensions_after_iterations_are_ignored() {
    let mut session = rfc_session_after_first();
    let client_final = session.step(Some(format!("{RFC_SERVER_FIRST},x=ext").as_bytes())).unwrap().unwrap();
    // The auth message includes the extension, so the proof differs, but the exchange goes on.
    assert!(String::from_utf8(client_final).unwrap().starts_with("c=biws,r="));
}

#[test]
fn scram_malformed_server_final() {
    for case in [&b""[..], b"x=1", b"v=!!!", b"\xff\xfe", b"r=abc"] {
        let err = rfc_session_after_final().step(Some(case)).unwrap_err();
        assert!(matches!(err, SaslError::InvalidServerMessage { .. }), "{case:?}: {err}");
    }
}

#[test]
fn scram_session_is_finished_after_an_error() {
    let mut session = rfc_session_after_first();
    session.step(Some(b"garbage")).unwrap_err();
    let err = session.step(Some(RFC_SERVER_FIRST.as_bytes())).unwrap_err();
    assert!(matches!(err, SaslError::UnexpectedStep { .. }), "{err}");
}

#[test]
fn scram_out_of_order_steps() {
    let err = rfc_session().step(Some(b"r=x")).unwrap_err();
    assert!(matches!(err, SaslError::UnexpectedStep { .. }), "{err}");
    let err = rfc_session_after_first().step(None).unwrap_err();
    assert!(matches!(err, SaslError::UnexpectedStep { .. }), "{err}");
}

#[test]
fn scram_username_is_escaped_and_validated() {
    let mut session =
        ScramSession::with_nonce(ScramHash::Sha512, "a=b,c", &Secret::new("p"), "nonce".to_owned()).unwrap();
    assert_eq!(session.mechanism(), "SCRAM-SHA-512");
    assert_eq!(session.step(None).unwrap().unwrap(), b"n,,n=a=3Db=2Cc,r=nonce");
    for bad in ["", "a\0b"] {
        let err = ScramSession::new(ScramHash::Sha256, bad, &Secret::new("p")).err().unwrap();
        assert!(matches!(err, SaslError::InvalidCredentials { .. }), "{err}");
    }
}

#[test]
fn random_server_messages_never_panic() {
    let mut rng = fastrand::Rng::with_seed(0x5a51);
    let alphabet = b"rsive=,0123456789abcXYZ+/\x00\xff";
    for _ in 0..2000 {
        let len = rng.usize(0..48);
        let message: Vec<u8> = (0..len).map(|_| alphabet[rng.usize(..alphabet.len())]).collect();
        let _ = rfc_session_after_first().step(Some(&message));
        let _ = rfc_session_after_final().step(Some(&message));
    }
    // Valid prefixes with random tails.
    for _ in 0..200 {
        let cut = rng.usize(0..RFC_SERVER_FIRST.len());
        let _ = rfc_session_after_first().step(Some(&RFC_SERVER_FIRST.as_bytes()[..cut]));
        let cut = rng.usize(0..RFC_SERVER_FINAL.len());
        let _ = rfc_session_after_final().step(Some(&RFC_SERVER_FINAL.as_bytes()[..cut]));
    }
}

// ---- exchanges against the `sasl` crate's server ----

/// SCRAM-SHA-512 for the `sasl` crate's server, which ships SHA-1 and SHA-256 only.
struct ServerSha512;

#[derive(Clone, Debug, PartialEq, Eq)]
struct Pbkdf2Sha512 {
    salt: Vec<u8>,
    iterations: u32,
    digest: Vec<u8>,
}

impl sasl::secret::Secret for Pbkdf2Sha512 {}

impl sasl::secret::Pbkdf2Secret for Pbkdf2Sha512 {
    fn salt(&self) -> &[u8] {
        &self.salt
    }
    fn iterations(&self) -> u32 {
        self.iterations
    }
    fn digest(&self) -> &[u8] {
        &self.digest
    }
}

impl ScramProvider for ServerSha512 {
    type Secret = Pbkdf2Sha512;

    fn name() -> &'static str {
        "SHA-512"
    }

    fn hash(data: &[u8]) -> Vec<u8> {
        Sha512::digest(data).to_vec()
    }

    fn hmac(data: &[u8], key: &[u8]) -> Result<Vec<u8>, hmac::digest::InvalidLength> {
        let mut mac = <Hmac<Sha512> as KeyInit>::new_from_slice(key)?;
        mac.update(data);
        Ok(mac.finalize().into_bytes().to_vec())
    }

    fn derive(password: &Password, salt: &[u8], iterations: u32) -> Result<Vec<u8>, DeriveError> {
        match password {
            Password::Plain(plain) => {
                let mut out = vec![0; 64];
                pbkdf2::pbkdf2_hmac::<Sha512>(plain.as_bytes(), salt, iterations, &mut out);
                Ok(out)
            }
            Password::Pbkdf2 { .. } => Err(DeriveError::IncompatibleHashingMethod("pbkdf2".into(), "plain".into())),
        }
    }
}

/// The server's user database: one user, `alice` / `alice-secret`.
struct Users {
    iterations: u32,
}

const USER: &str = "alice";
const PASSWORD: &str = "alice-secret";
const SALT: &[u8] = b"klife-test-salt!";

impl Provider<sasl::secret::Pbkdf2Sha256> for Users {
    fn provide(&self, identity: &Identity) -> Result<sasl::secret::Pbkdf2Sha256, ProviderError> {
        if identity != &Identity::Username(USER.to_owned()) {
            return Err(ProviderError::AuthenticationFailed);
        }
        Ok(sasl::secret::Pbkdf2Sha256::derive(PASSWORD, SALT, self.iterations)?)
    }
}

impl Provider<Pbkdf2Sha512> for Users {
    fn provide(&self, identity: &Identity) -> Result<Pbkdf2Sha512, ProviderError> {
        if identity != &Identity::Username(USER.to_owned()) {
            return Err(ProviderError::AuthenticationFailed);
        }
        let digest = ServerSha512::derive(&Password::Plain(PASSWORD.to_owned()), SALT, self.iterations)?;
        Ok(Pbkdf2Sha512 { salt: SALT.to_vec(), iterations: self.iterations, digest })
    }
}

sasl::impl_validator_using_provider!(Users, sasl::secret::Pbkdf2Sha256);
sasl::impl_validator_using_provider!(Users, Pbkdf2Sha512);

impl Validator<sasl::secret::Plain> for Users {
    fn validate(&self, identity: &Identity, value: &sasl::secret::Plain) -> Result<(), ValidatorError> {
        if identity == &Identity::Username(USER.to_owned()) && value.0 == PASSWORD {
            Ok(())
        } else {
            Err(ValidatorError::AuthenticationFailed)
        }
    }
}

/// How an exchange ended when it did not succeed.
#[derive(Debug)]
#[allow(dead_code)] // the fields are read through `Debug` in assertion messages
enum Failure {
    Client(SaslError),
    Server(MechanismError),
}

/// Runs a whole exchange between our client and a `sasl` server; returns the
/// identity the server authenticated and the number of server messages.
async fn exchange(config: &SaslConfig, server: &mut dyn Mechanism) -> Result<(Identity, usize), Failure> {
    let mut client = config.start().await.map_err(Failure::Client)?;
    assert_eq!(client.mechanism(), config.mechanism());
    assert_eq!(server.name(), config.mechanism());
    let mut message = client.step(None).map_err(Failure::Client)?.expect("a first message");
    let mut rounds = 0;
    loop {
        rounds += 1;
        match server.respond(&message).map_err(Failure::Server)? {
            Response::Proceed(challenge) => {
                message = client.step(Some(&challenge)).map_err(Failure::Client)?.expect("the exchange goes on");
            }
            Response::Success(identity, last) => {
                let next = client.step(Some(&last)).map_err(Failure::Client)?;
                assert!(next.is_none(), "the client must be done once the server is");
                return Ok((identity, rounds));
            }
        }
    }
}

// The `sasl` server accepts a client that sends "n" (no channel binding) only when
// it is configured with channel binding data; empty data keeps `c=biws`.
fn no_binding() -> ChannelBinding {
    ChannelBinding::TlsUnique(Vec::new())
}

#[tokio::test]
async fn scram_sha256_against_sasl_server() {
    let mut server = ScramServer::<ServerSha256, _>::new(Users { iterations: 4096 }, no_binding());
    let (identity, rounds) = exchange(&SaslConfig::scram_sha256(USER, PASSWORD), &mut server).await.unwrap();
    assert_eq!(identity, Identity::Username(USER.to_owned()));
    assert_eq!(rounds, 2);
}

#[tokio::test]
async fn scram_sha512_against_sasl_server() {
    let mut server = ScramServer::<ServerSha512, _>::new(Users { iterations: 4096 }, no_binding());
    let (identity, rounds) = exchange(&SaslConfig::scram_sha512(USER, PASSWORD), &mut server).await.unwrap();
    assert_eq!(identity, Identity::Username(USER.to_owned()));
    assert_eq!(rounds, 2);
}

#[tokio::test]
async fn scram_sha512_against_sasl_server_with_more_iterations() {
    let mut server = ScramServer::<ServerSha512, _>::new(Users { iterations: 8192 }, no_binding());
    exchange(&SaslConfig::scram_sha512(USER, PASSWORD), &mut server).await.unwrap();
}

#[tokio::test]
async fn scram_wrong_password_is_rejected_by_the_server() {
    let mut server = ScramServer::<ServerSha256, _>::new(Users { iterations: 4096 }, no_binding());
    let failure = exchange(&SaslConfig::scram_sha256(USER, "wrong"), &mut server).await.unwrap_err();
    assert!(matches!(failure, Failure::Server(MechanismError::AuthenticationFailed)), "{failure:?}");

    let mut server = ScramServer::<ServerSha512, _>::new(Users { iterations: 4096 }, no_binding());
    let failure = exchange(&SaslConfig::scram_sha512(USER, "wrong"), &mut server).await.unwrap_err();
    assert!(matches!(failure, Failure::Server(MechanismError::AuthenticationFailed)), "{failure:?}");
}

#[tokio::test]
async fn scram_server_with_a_different_password_is_caught_by_the_client() {
    // A server that does not know the password: it accepts any proof and signs with
    // keys derived from another password. The client must refuse it.
    let config = SaslConfig::scram_sha512(USER, PASSWORD);
    let mut client = config.start().await.unwrap();
    let client_first = String::from_utf8(client.step(None).unwrap().unwrap()).unwrap();
    let client_first_bare = client_first.strip_prefix("n,,").unwrap();
    let client_nonce = client_first_bare.split(",r=").nth(1).unwrap();
    let server_first = format!("r={client_nonce}srv,s={},i=4096", STANDARD.encode(SALT));
    let client_final = String::from_utf8(client.step(Some(server_first.as_bytes())).unwrap().unwrap()).unwrap();
    let without_proof = client_final.split(",p=").next().unwrap();
    let auth_message = format!("{client_first_bare},{server_first},{without_proof}");
    let salted = ServerSha512::derive(&Password::Plain("not-the-password".into()), SALT, 4096).unwrap();
    let server_key = ServerSha512::hmac(b"Server Key", &salted).unwrap();
    let signature = ServerSha512::hmac(auth_message.as_bytes(), &server_key).unwrap();
    let server_final = format!("v={}", STANDARD.encode(signature));
    let err = client.step(Some(server_final.as_bytes())).unwrap_err();
    assert!(matches!(err, SaslError::ServerSignatureMismatch { mechanism: "SCRAM-SHA-512" }), "{err}");
}

#[tokio::test]
async fn scram_unknown_user_is_rejected_by_the_server() {
    let mut server = ScramServer::<ServerSha256, _>::new(Users { iterations: 4096 }, no_binding());
    let failure = exchange(&SaslConfig::scram_sha256("mallory", PASSWORD), &mut server).await.unwrap_err();
    assert!(matches!(failure, Failure::Server(_)), "{failure:?}");
}

#[tokio::test]
async fn plain_against_sasl_server() {
    let mut server = PlainServer::new(Users { iterations: 0 });
    let (identity, rounds) = exchange(&SaslConfig::plain(USER, PASSWORD), &mut server).await.unwrap();
    assert_eq!(identity, Identity::Username(USER.to_owned()));
    assert_eq!(rounds, 1);

    let mut server = PlainServer::new(Users { iterations: 0 });
    let failure = exchange(&SaslConfig::plain(USER, "wrong"), &mut server).await.unwrap_err();
    assert!(matches!(failure, Failure::Server(MechanismError::ValidatorError(_))), "{failure:?}");
}

// ---- configuration, secrets and token providers ----

#[test]
fn mechanism_names() {
    assert_eq!(SaslConfig::plain("u", "p").mechanism(), "PLAIN");
    assert_eq!(SaslConfig::scram_sha256("u", "p").mechanism(), "SCRAM-SHA-256");
    assert_eq!(SaslConfig::scram_sha512("u", "p").mechanism(), "SCRAM-SHA-512");
    assert_eq!(SaslConfig::oauthbearer(FixedToken::new("t")).mechanism(), "OAUTHBEARER");
}

#[test]
fn debug_never_shows_secrets() {
    let configs = [
        SaslConfig::plain("alice", "hunter2-plain"),
        SaslConfig::scram_sha256("alice", String::from("hunter2-256")),
        SaslConfig::scram_sha512("alice", Secret::new("hunter2-512")),
        SaslConfig::oauthbearer(FixedToken::new("hunter2-token")),
    ];
    for config in configs {
        let debug = format!("{config:?} {:?}", config.clone());
        assert!(!debug.contains("hunter2"), "{debug}");
        assert!(debug.contains(config.mechanism()), "{debug}");
    }
    let secret = Secret::new("hunter2");
    assert_eq!(format!("{secret} {secret:?}"), "<redacted> <redacted>");
    assert_eq!(secret.expose(), "hunter2");
}

#[test]
fn start_future_is_send() {
    fn assert_send<T: Send>(_: &T) {}
    let config = SaslConfig::plain("u", "p");
    let future = config.start();
    assert_send(&future);
}

/// A provider that hands out one fixed token and counts the calls.
#[derive(Debug)]
struct FixedToken {
    token: OAuthToken,
    calls: Arc<AtomicUsize>,
}

impl FixedToken {
    fn new(token: &str) -> Self {
        FixedToken { token: OAuthToken::new(token), calls: Arc::default() }
    }
}

impl TokenProvider for FixedToken {
    fn token(&self) -> TokenFuture<'_> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let token = self.token.clone();
        Box::pin(async move { Ok(token) })
    }
}

#[derive(Debug)]
struct FailingProvider;

impl TokenProvider for FailingProvider {
    fn token(&self) -> TokenFuture<'_> {
        Box::pin(async { Err("identity provider unreachable".into()) })
    }
}

#[tokio::test]
async fn oauthbearer_asks_the_provider_on_every_start() {
    let provider = FixedToken::new("abc.def.ghi");
    let calls = provider.calls.clone();
    let config = SaslConfig::oauthbearer(provider);
    for round in 1..=2 {
        let mut session = config.start().await.unwrap();
        assert_eq!(calls.load(Ordering::SeqCst), round);
        assert_eq!(session.step(None).unwrap().unwrap(), b"n,,\x01auth=Bearer abc.def.ghi\x01\x01");
        assert!(session.step(Some(b"")).unwrap().is_none());
    }
}

#[tokio::test]
async fn oauthbearer_provider_failure() {
    let err = SaslConfig::oauthbearer(FailingProvider).start().await.err().unwrap();
    assert!(matches!(err, SaslError::TokenProvider(_)), "{err}");
    assert!(err.to_string().contains("identity provider unreachable"), "{err}");
    assert!(std::error::Error::source(&err).is_some());
}

#[tokio::test]
async fn oauthbearer_invalid_token_from_provider() {
    let err = SaslConfig::oauthbearer(FixedToken::new("Bearer secret-tok")).start().await.err().unwrap();
    assert!(matches!(err, SaslError::InvalidToken { .. }), "{err}");
    assert!(!err.to_string().contains("secret-tok"), "{err}");
}

#[tokio::test]
async fn start_checks_credentials() {
    for config in [SaslConfig::plain("", "p"), SaslConfig::scram_sha256("", "p"), SaslConfig::scram_sha512("u\0", "p")]
    {
        let err = config.start().await.err().unwrap();
        assert!(matches!(err, SaslError::InvalidCredentials { .. }), "{err}");
    }
}
