//! Opening a connection: TCP, then TLS, then ApiVersions (v3, falling back to what the
//! broker offers), then SASL; only then are the reader and writer tasks started.

use std::fmt::Display;

use bytes::{Bytes, BytesMut};
use klife_protocol::messages::{
    ApiVersionsRequest, ApiVersionsResponse, SaslAuthenticateRequest, SaslHandshakeRequest,
};
use klife_protocol::{ApiKey, ErrorCode, Request, frame};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::conn::{BoxRead, BoxWrite, Connection, ConnectionParams};
use crate::sasl::SaslConfig;
use crate::versions::BrokerVersions;
use crate::{ConnectionConfig, Error, telemetry};

/// The highest ApiVersions version klife sends first.
const API_VERSIONS_MAX: i16 = 3;

/// An established transport, before it is split into halves.
enum Transport {
    Tcp(TcpStream),
    #[cfg(feature = "tls")]
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

impl Transport {
    fn split(self) -> (BoxRead, BoxWrite) {
        match self {
            Transport::Tcp(s) => {
                let (r, w) = s.into_split();
                (Box::new(r), Box::new(w))
            }
            #[cfg(feature = "tls")]
            Transport::Tls(s) => {
                let (r, w) = tokio::io::split(*s);
                (Box::new(r), Box::new(w))
            }
        }
    }
}

/// Opens a connection to `host:port`, labelled `broker` in errors and logs (and
/// `node_id` in request spans; `None` for a bootstrap address), and runs every
/// handshake, all within `config.connect_timeout`.
pub(crate) async fn connect(
    host: &str,
    port: u16,
    broker: String,
    node_id: Option<i32>,
    config: &ConnectionConfig,
) -> Result<Connection, Error> {
    let timeout = config.connect_timeout;
    match tokio::time::timeout(timeout, connect_inner(host, port, &broker, node_id, config)).await {
        Ok(Ok(conn)) => {
            telemetry::record_connection_opened();
            tracing::debug!(broker = %broker, "connected");
            Ok(conn)
        }
        Ok(Err(e)) => Err(e),
        Err(_) => {
            telemetry::record_connection_error("connect");
            Err(Error::Connect {
                broker,
                reason: format!("no connection and handshakes within the connect timeout of {timeout:?}"),
            })
        }
    }
}

async fn connect_inner(
    host: &str,
    port: u16,
    broker: &str,
    node_id: Option<i32>,
    config: &ConnectionConfig,
) -> Result<Connection, Error> {
    let tcp = TcpStream::connect((host, port)).await.map_err(|e| {
        telemetry::record_connection_error("connect");
        Error::Connect { broker: broker.to_owned(), reason: e.to_string() }
    })?;
    let _ = tcp.set_nodelay(true);
    let transport = secure(tcp, host, broker, config).await?;
    let mut hs = Handshake { transport, correlation_id: 0, broker, node_id, config, span: tracing::Span::none() };
    let versions = hs.api_versions().await.inspect_err(|_| telemetry::record_connection_error("api_versions"))?;
    if let Some(sasl) = &config.sasl {
        hs.authenticate(sasl, &versions).await.inspect_err(|_| telemetry::record_connection_error("sasl"))?;
    }
    let next = hs.correlation_id;
    let (read, write) = hs.transport.split();
    let params = ConnectionParams {
        broker: broker.to_owned(),
        node_id,
        client_id: config.client_id.clone(),
        max_in_flight: config.max_in_flight,
        request_timeout: config.request_timeout,
        max_frame_size: config.max_frame_size,
    };
    Ok(Connection::spawn(params, versions, read, write, next))
}

#[cfg(feature = "tls")]
async fn secure(tcp: TcpStream, host: &str, broker: &str, config: &ConnectionConfig) -> Result<Transport, Error> {
    let Some(tls) = &config.tls else { return Ok(Transport::Tcp(tcp)) };
    let tls_error = |reason: String| {
        telemetry::record_connection_error("tls");
        Error::Tls { broker: broker.to_owned(), reason }
    };
    let connector = tls.connector().map_err(|e| tls_error(e.to_string()))?;
    let name = tls.server_name(host).map_err(|e| tls_error(e.to_string()))?;
    let stream = connector.connect(name, tcp).await.map_err(|e| tls_error(describe_tls_failure(&e)))?;
    Ok(Transport::Tls(Box::new(stream)))
}

#[cfg(not(feature = "tls"))]
async fn secure(tcp: TcpStream, _host: &str, _broker: &str, _config: &ConnectionConfig) -> Result<Transport, Error> {
    Ok(Transport::Tcp(tcp))
}

/// Turns a TLS handshake failure into advice.
#[cfg(feature = "tls")]
fn describe_tls_failure(e: &std::io::Error) -> String {
    let text = e.to_string();
    let t = text.to_ascii_lowercase().replace(['_', ' '], "");
    let hint = if t.contains("unknownissuer") || t.contains("badsignature") {
        " (the broker's certificate is not signed by a trusted CA: check the root certificates given to TlsConfig)"
    } else if t.contains("notvalidforname") {
        " (the certificate does not name this host: connect by a name it lists, set TlsConfig::with_server_name, \
         or, knowingly, dangerous_disable_hostname_verification)"
    } else if t.contains("expired") {
        " (the broker's certificate has expired)"
    } else if t.contains("certificaterequired") {
        " (the broker requires a client certificate: set TlsConfig::with_client_certificate_pem)"
    } else if t.contains("invalidcontenttype") || t.contains("corruptmessage") {
        " (the broker did not answer with TLS: is this a plaintext listener?)"
    } else {
        ""
    };
    format!("handshake failed: {text}{hint}")
}

struct Handshake<'a> {
    transport: Transport,
    correlation_id: i32,
    broker: &'a str,
    node_id: Option<i32>,
    config: &'a ConnectionConfig,
    /// The span of the last request, on which an error code of its answer is recorded.
    span: tracing::Span,
}

impl Handshake<'_> {
    async fn roundtrip<R: Request>(&mut self, request: &R, version: i16) -> Result<Bytes, Error> {
        let id = self.correlation_id;
        self.correlation_id += 1;
        let started = std::time::Instant::now();
        self.span = telemetry::request_span(R::API_KEY, version, self.node_id, self.broker, id);
        let result = self.send_and_read(request, version, id).await;
        telemetry::finish_request(&self.span, started.elapsed(), result.as_ref().err().map(|e| e as &dyn Display));
        result
    }

    /// Records on the last request's span the error code its answer carries.
    fn answered_with(&self, code: ErrorCode) {
        if code != ErrorCode::None {
            self.span.record("error", code.name());
        }
    }

    async fn send_and_read<R: Request>(&mut self, request: &R, version: i16, id: i32) -> Result<Bytes, Error> {
        let mut buf = BytesMut::new();
        frame::encode_request(&mut buf, id, self.config.client_id.as_deref(), version, request)
            .map_err(|source| Error::Encode { api: R::API_KEY, version, source })?;
        let broker = self.broker;
        let plaintext = matches!(self.transport, Transport::Tcp(_));
        let lost = |e: std::io::Error| {
            // A TLS listener answers a plaintext request with a TLS alert (read as an
            // absurd frame size) or by closing the connection.
            let hint = if plaintext
                && matches!(e.kind(), std::io::ErrorKind::InvalidData | std::io::ErrorKind::UnexpectedEof)
            {
                " (if this is a TLS listener, configure TLS)"
            } else {
                ""
            };
            Error::Disconnected {
                broker: broker.to_owned(),
                reason: format!("{} handshake: {e}{hint}", R::API_KEY.name()),
            }
        };
        match &mut self.transport {
            Transport::Tcp(s) => exchange(s, &buf, self.config.max_frame_size).await.map_err(lost),
            #[cfg(feature = "tls")]
            Transport::Tls(s) => exchange(s.as_mut(), &buf, self.config.max_frame_size).await.map_err(lost),
        }
    }

    async fn call<R: Request>(&mut self, request: &R, version: i16) -> Result<R::Response, Error> {
        let f = self.roundtrip(request, version).await?;
        frame::decode_response::<R::Response>(f, version).map(|(_, r)| r).map_err(|source| {
            let e = Error::Decode { broker: self.broker.to_owned(), api: R::API_KEY, version, source };
            self.span.record("error", tracing::field::display(&e));
            e
        })
    }

    /// ApiVersions at v3; a broker that does not know v3 answers in the v0 format
    /// with UNSUPPORTED_VERSION and the versions it does know, and klife asks again.
    async fn api_versions(&mut self) -> Result<BrokerVersions, Error> {
        let mut version = API_VERSIONS_MAX;
        loop {
            let mut req = ApiVersionsRequest::default();
            if version >= 3 {
                req = req
                    .with_client_software_name("klife".to_owned())
                    .with_client_software_version(env!("CARGO_PKG_VERSION").to_owned());
            }
            let f = self.roundtrip(&req, version).await?;
            let leading = leading_error_code(&f);
            let parsed = frame::decode_response::<ApiVersionsResponse>(f.clone(), version)
                .or_else(|_| frame::decode_response::<ApiVersionsResponse>(f, 0));
            let resp = match parsed {
                Ok((_, r)) => r,
                // Some brokers answer a version they do not know with a body in neither
                // format; the error code right after the correlation id is still
                // readable, and UNSUPPORTED_VERSION there means "ask again with v0".
                Err(_) if version > 0 && leading == Some(ErrorCode::UnsupportedVersion) => {
                    tracing::debug!(
                        broker = self.broker,
                        from = version,
                        "ApiVersions answer unreadable; retrying with v0"
                    );
                    version = 0;
                    continue;
                }
                Err(source) => {
                    return Err(Error::Decode {
                        broker: self.broker.to_owned(),
                        api: ApiKey::ApiVersions,
                        version,
                        source,
                    });
                }
            };
            self.answered_with(ErrorCode::from_code(resp.error_code));
            match ErrorCode::from_code(resp.error_code) {
                ErrorCode::None => return Ok(BrokerVersions::from_response(&resp)),
                ErrorCode::UnsupportedVersion if version > 0 => {
                    let theirs = resp.api_keys.iter().find(|k| k.api_key == ApiKey::ApiVersions.code());
                    let next = theirs.map_or(0, |k| k.max_version.min(version - 1)).max(0);
                    tracing::debug!(broker = self.broker, from = version, to = next, "ApiVersions version fallback");
                    version = next;
                }
                code => {
                    return Err(Error::Broker {
                        broker: self.broker.to_owned(),
                        api: ApiKey::ApiVersions,
                        code,
                        message: None,
                    });
                }
            }
        }
    }

    async fn authenticate(&mut self, sasl: &SaslConfig, versions: &BrokerVersions) -> Result<(), Error> {
        let mechanism = sasl.mechanism();
        let broker = self.broker;
        let fail = |reason: String| {
            tracing::warn!(broker, mechanism, %reason, "SASL authentication failed");
            Error::Authentication { broker: broker.to_owned(), mechanism: mechanism.to_owned(), reason }
        };
        // Handshake v1+ means the exchange continues in SaslAuthenticate requests.
        let hv = versions.negotiate(ApiKey::SaslHandshake, None, self.broker)?;
        if hv < 1 {
            return Err(fail(
                "the broker only has SaslHandshake v0 (pre-1.0 Kafka), which klife does not speak".into(),
            ));
        }
        let resp = self.call(&SaslHandshakeRequest::default().with_mechanism(mechanism.to_owned()), hv).await?;
        self.answered_with(ErrorCode::from_code(resp.error_code));
        match ErrorCode::from_code(resp.error_code) {
            ErrorCode::None => {}
            ErrorCode::UnsupportedSaslMechanism => {
                return Err(fail(format!(
                    "the broker does not enable {mechanism}; it offers: {}",
                    if resp.mechanisms.is_empty() { "none".to_owned() } else { resp.mechanisms.join(", ") }
                )));
            }
            code => return Err(fail(format!("SaslHandshake answered {code}"))),
        }
        let av = versions.negotiate(ApiKey::SaslAuthenticate, None, self.broker)?;
        let mut session = sasl.start().await.map_err(|e| fail(e.to_string()))?;
        let mut server: Option<Bytes> = None;
        while let Some(message) = session.step(server.as_deref()).map_err(|e| fail(e.to_string()))? {
            let resp = self.call(&SaslAuthenticateRequest::default().with_auth_bytes(Bytes::from(message)), av).await?;
            let code = ErrorCode::from_code(resp.error_code);
            self.answered_with(code);
            if code != ErrorCode::None {
                let detail = resp.error_message.filter(|m| !m.is_empty()).map(|m| format!(": {m}")).unwrap_or_default();
                let advice =
                    if code == ErrorCode::SaslAuthenticationFailed { " (check the username and password)" } else { "" };
                return Err(fail(format!("{} (code {}){detail}{advice}", code.name(), code.code())));
            }
            server = Some(resp.auth_bytes);
        }
        tracing::debug!(broker = self.broker, mechanism, "SASL authenticated");
        Ok(())
    }
}

/// The error code at the front of an ApiVersions response body (after the v0
/// response header's correlation id).
fn leading_error_code(frame: &[u8]) -> Option<ErrorCode> {
    match frame {
        [_, _, _, _, a, b, ..] => Some(ErrorCode::from_code(i16::from_be_bytes([*a, *b]))),
        _ => None,
    }
}

/// Writes one request frame and reads one response frame (without its size).
async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(s: &mut S, request: &[u8], max: usize) -> std::io::Result<Bytes> {
    s.write_all(request).await?;
    s.flush().await?;
    let size = s.read_i32().await?;
    let size = usize::try_from(size)
        .ok()
        .filter(|n| *n <= max)
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidData, format!("invalid response size {size}")))?;
    let mut body = vec![0u8; size];
    s.read_exact(&mut body).await?;
    Ok(Bytes::from(body))
}
