//! SASL/PLAIN (RFC 4616): one client message, `\0username\0password`.

use super::{SaslError, SaslSession, Secret, wipe};

/// The mechanism's name.
pub(super) const MECHANISM: &str = "PLAIN";

/// A PLAIN exchange: the credentials, then the server's (empty) answer.
pub(super) struct PlainSession {
    /// The client message, built up front; `None` once sent.
    message: Option<Vec<u8>>,
    state: State,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Initial,
    Sent,
    Done,
}

impl PlainSession {
    /// Checks the credentials and prepares the message. The authorization
    /// identity is left empty: the broker authorizes the user that authenticates.
    pub(super) fn new(username: &str, password: &Secret) -> Result<Self, SaslError> {
        let invalid = |reason: &str| SaslError::InvalidCredentials { mechanism: MECHANISM, reason: reason.to_owned() };
        if username.is_empty() {
            return Err(invalid("the user name is empty"));
        }
        if username.contains('\0') {
            return Err(invalid("the user name contains a NUL character"));
        }
        let password = password.expose();
        if password.is_empty() {
            return Err(invalid("the password is empty"));
        }
        if password.contains('\0') {
            return Err(invalid("the password contains a NUL character"));
        }
        let mut message = Vec::with_capacity(2 + username.len() + password.len());
        message.push(0);
        message.extend_from_slice(username.as_bytes());
        message.push(0);
        message.extend_from_slice(password.as_bytes());
        Ok(PlainSession { message: Some(message), state: State::Initial })
    }
}

impl SaslSession for PlainSession {
    fn mechanism(&self) -> &'static str {
        MECHANISM
    }

    fn step(&mut self, server: Option<&[u8]>) -> Result<Option<Vec<u8>>, SaslError> {
        let unexpected = |reason| SaslError::UnexpectedStep { mechanism: MECHANISM, reason };
        // Any error finishes the session.
        match (std::mem::replace(&mut self.state, State::Done), server) {
            (State::Initial, None) => {
                self.state = State::Sent;
                Ok(self.message.take())
            }
            (State::Initial, Some(_)) => {
                Err(unexpected("the first step takes no server message (the client speaks first)"))
            }
            // PLAIN carries nothing from the server: whatever it answered, we are done.
            (State::Sent, Some(_)) => Ok(None),
            (State::Sent, None) => Err(unexpected("a server message was expected")),
            (State::Done, _) => Err(unexpected("the exchange is already complete")),
        }
    }
}

impl Drop for PlainSession {
    fn drop(&mut self) {
        if let Some(message) = self.message.take() {
            wipe(message);
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn message_layout_and_steps() {
        let mut session = PlainSession::new("alice", &Secret::new("pw")).unwrap();
        assert_eq!(session.mechanism(), "PLAIN");
        assert_eq!(session.step(None).unwrap().unwrap(), b"\0alice\0pw");
        assert!(session.step(Some(b"")).unwrap().is_none());
        assert!(matches!(session.step(Some(b"")), Err(SaslError::UnexpectedStep { .. })));
    }

    #[test]
    fn out_of_order_steps() {
        let mut session = PlainSession::new("alice", &Secret::new("pw")).unwrap();
        assert!(matches!(session.step(Some(b"x")), Err(SaslError::UnexpectedStep { .. })));
        assert!(matches!(session.step(None), Err(SaslError::UnexpectedStep { .. })));
        let mut session = PlainSession::new("alice", &Secret::new("pw")).unwrap();
        session.step(None).unwrap();
        assert!(matches!(session.step(None), Err(SaslError::UnexpectedStep { .. })));
    }

    #[test]
    fn rejects_unsendable_credentials() {
        for (user, pass) in [("", "pw"), ("a\0b", "pw"), ("alice", ""), ("alice", "p\0w")] {
            let err = PlainSession::new(user, &Secret::new(pass)).err().unwrap();
            assert!(matches!(err, SaslError::InvalidCredentials { mechanism: "PLAIN", .. }), "{err}");
            assert!(!err.to_string().contains("p\0w"));
        }
    }
}
