//! The server side of SASL: PLAIN and SCRAM-SHA-256 are the `sasl` crate's server
//! mechanisms; SCRAM-SHA-512 is the same crate's SCRAM state machine over a SHA-512
//! provider defined here (the crate ships SHA-1 and SHA-256 only).

use std::collections::HashMap;
use std::sync::Arc;

use hmac::{Hmac, Mac};
use sasl::common::scram::{DeriveError, ScramProvider, Sha256};
use sasl::common::{ChannelBinding, Identity, Password};
use sasl::secret::{Pbkdf2Secret, Pbkdf2Sha256, Secret};
use sasl::server::mechanisms::{Plain, Scram};
use sasl::server::{Mechanism, Provider, ProviderError, Validator, ValidatorError};
use sha2::{Digest, Sha512 as Sha512Hash};

/// SCRAM iterations for stored credentials (Kafka's minimum, 4096).
const SCRAM_ITERATIONS: u32 = 4096;

/// A SASL mechanism a listener can offer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SaslMechanism {
    /// `PLAIN`: user name and password in the clear (use it over TLS).
    Plain,
    /// `SCRAM-SHA-256`.
    ScramSha256,
    /// `SCRAM-SHA-512`.
    ScramSha512,
}

impl SaslMechanism {
    /// Every mechanism, the default of a SASL listener.
    pub const ALL: [SaslMechanism; 3] = [SaslMechanism::Plain, SaslMechanism::ScramSha256, SaslMechanism::ScramSha512];

    /// The mechanism's name in SaslHandshake.
    pub const fn name(self) -> &'static str {
        match self {
            SaslMechanism::Plain => "PLAIN",
            SaslMechanism::ScramSha256 => "SCRAM-SHA-256",
            SaslMechanism::ScramSha512 => "SCRAM-SHA-512",
        }
    }

    fn from_name(name: &str) -> Option<SaslMechanism> {
        SaslMechanism::ALL.into_iter().find(|m| m.name() == name)
    }
}

/// PBKDF2-HMAC-SHA-512 salted password, the secret of SCRAM-SHA-512.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Pbkdf2Sha512 {
    salt: Vec<u8>,
    iterations: u32,
    digest: Vec<u8>,
}

impl Secret for Pbkdf2Sha512 {}

impl Pbkdf2Secret for Pbkdf2Sha512 {
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

/// SHA-512 for the `sasl` crate's SCRAM mechanism.
struct Sha512;

impl ScramProvider for Sha512 {
    type Secret = Pbkdf2Sha512;

    fn name() -> &'static str {
        "SHA-512"
    }

    fn hash(data: &[u8]) -> Vec<u8> {
        Sha512Hash::digest(data).to_vec()
    }

    fn hmac(data: &[u8], key: &[u8]) -> Result<Vec<u8>, hmac::digest::InvalidLength> {
        let mut mac = Hmac::<Sha512Hash>::new_from_slice(key)?;
        mac.update(data);
        Ok(mac.finalize().into_bytes().to_vec())
    }

    fn derive(password: &Password, salt: &[u8], iterations: u32) -> Result<Vec<u8>, DeriveError> {
        match password {
            Password::Plain(plain) => {
                let mut out = vec![0; 64];
                pbkdf2::pbkdf2::<Hmac<Sha512Hash>>(plain.as_bytes(), salt, iterations, &mut out)?;
                Ok(out)
            }
            Password::Pbkdf2 { method, .. } => {
                Err(DeriveError::IncompatibleHashingMethod(method.clone(), Self::name().to_owned()))
            }
        }
    }
}

#[derive(Debug)]
struct Credentials {
    password: String,
    sha256: Pbkdf2Sha256,
    sha512: Pbkdf2Sha512,
}

/// The users a SASL listener accepts, with SCRAM credentials derived once.
#[derive(Debug, Clone, Default)]
pub(crate) struct Users {
    users: Arc<HashMap<String, Credentials>>,
    mechanisms: Vec<SaslMechanism>,
}

impl Users {
    pub(crate) fn new(users: &[(String, String)], mechanisms: &[SaslMechanism]) -> Result<Users, crate::Error> {
        let mut map = HashMap::new();
        for (user, password) in users {
            let salt: Vec<u8> = (0..16).map(|_| fastrand::u8(..)).collect();
            let derive = |e: DeriveError| crate::Error::InvalidArgument(format!("SCRAM credentials of {user}: {e}"));
            let sha256 = Pbkdf2Sha256::derive(password, &salt, SCRAM_ITERATIONS).map_err(derive)?;
            let digest = Sha512::derive(&Password::Plain(password.clone()), &salt, SCRAM_ITERATIONS).map_err(derive)?;
            let sha512 = Pbkdf2Sha512 { salt, iterations: SCRAM_ITERATIONS, digest };
            map.insert(user.clone(), Credentials { password: password.clone(), sha256, sha512 });
        }
        Ok(Users { users: Arc::new(map), mechanisms: mechanisms.to_vec() })
    }

    /// The enabled mechanisms' names, for SaslHandshake.
    pub(crate) fn mechanism_names(&self) -> Vec<String> {
        self.mechanisms.iter().map(|m| m.name().to_owned()).collect()
    }

    /// A server session for `name`, if that mechanism is enabled.
    pub(crate) fn session(&self, name: &str) -> Option<Box<dyn Mechanism + Send>> {
        let mechanism = SaslMechanism::from_name(name).filter(|m| self.mechanisms.contains(m))?;
        // Kafka clients send the GS2 header "n,,"; the `sasl` crate accepts it when the
        // server side claims channel binding support with empty binding data.
        let binding = || ChannelBinding::TlsUnique(Vec::new());
        Some(match mechanism {
            SaslMechanism::Plain => Box::new(Plain::new(self.clone())),
            SaslMechanism::ScramSha256 => Box::new(Scram::<Sha256, _>::new(self.clone(), binding())),
            SaslMechanism::ScramSha512 => Box::new(Scram::<Sha512, _>::new(self.clone(), binding())),
        })
    }

    fn get(&self, identity: &Identity) -> Option<&Credentials> {
        match identity {
            Identity::Username(name) => self.users.get(name),
            Identity::None => None,
        }
    }
}

impl Provider<Pbkdf2Sha256> for Users {
    fn provide(&self, identity: &Identity) -> Result<Pbkdf2Sha256, ProviderError> {
        self.get(identity).map(|c| c.sha256.clone()).ok_or(ProviderError::AuthenticationFailed)
    }
}

impl Provider<Pbkdf2Sha512> for Users {
    fn provide(&self, identity: &Identity) -> Result<Pbkdf2Sha512, ProviderError> {
        self.get(identity).map(|c| c.sha512.clone()).ok_or(ProviderError::AuthenticationFailed)
    }
}

sasl::impl_validator_using_provider!(Users, Pbkdf2Sha256);
sasl::impl_validator_using_provider!(Users, Pbkdf2Sha512);

impl Validator<sasl::secret::Plain> for Users {
    fn validate(&self, identity: &Identity, value: &sasl::secret::Plain) -> Result<(), ValidatorError> {
        match self.get(identity) {
            Some(c) if c.password == value.0 => Ok(()),
            _ => Err(ValidatorError::AuthenticationFailed),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use sasl::client::Mechanism as _;
    use sasl::client::mechanisms::Scram as ClientScram;
    use sasl::common::Credentials as ClientCredentials;
    use sasl::server::Response;

    fn users() -> Users {
        Users::new(&[("alice".into(), "secret".into())], &SaslMechanism::ALL).unwrap()
    }

    fn scram_round<S: ScramProvider>(server: &mut dyn Mechanism, password: &str) -> bool {
        let creds = ClientCredentials::default()
            .with_username("alice")
            .with_password(password)
            .with_channel_binding(ChannelBinding::None);
        let mut client = ClientScram::<S>::from_credentials(creds).unwrap();
        let first = client.initial();
        let Ok(Response::Proceed(challenge)) = server.respond(&first) else { return false };
        let Ok(last) = client.response(&challenge) else { return false };
        match server.respond(&last) {
            Ok(Response::Success(_, verifier)) => client.success(&verifier).is_ok(),
            _ => false,
        }
    }

    #[test]
    fn scram_sha512_and_sha256_accept_the_right_password_only() {
        let users = users();
        assert!(scram_round::<Sha256>(&mut *users.session("SCRAM-SHA-256").unwrap(), "secret"));
        assert!(!scram_round::<Sha256>(&mut *users.session("SCRAM-SHA-256").unwrap(), "wrong"));
        assert!(scram_round::<Sha512>(&mut *users.session("SCRAM-SHA-512").unwrap(), "secret"));
        assert!(!scram_round::<Sha512>(&mut *users.session("SCRAM-SHA-512").unwrap(), "wrong"));
    }

    #[test]
    fn plain_checks_the_password_and_only_enabled_mechanisms_start() {
        let users = Users::new(&[("alice".into(), "secret".into())], &[SaslMechanism::Plain]).unwrap();
        let mut plain = users.session("PLAIN").unwrap();
        assert!(matches!(plain.respond(b"\0alice\0secret"), Ok(Response::Success(..))));
        let mut plain = users.session("PLAIN").unwrap();
        assert!(plain.respond(b"\0alice\0nope").is_err());
        assert!(users.session("SCRAM-SHA-256").is_none());
        assert!(users.session("GSSAPI").is_none());
        assert_eq!(users.mechanism_names(), vec!["PLAIN".to_owned()]);
    }
}
