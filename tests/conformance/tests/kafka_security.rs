//! TLS and SASL against Apache Kafka's own listeners: the 3-node cluster `cargo xtask
//! test` starts has an SSL listener (a certificate for `localhost` and `127.0.0.1`
//! signed by a CA generated at start), SASL_SSL with SCRAM-SHA-256 and SCRAM-SHA-512,
//! and SASL_PLAINTEXT with PLAIN, all for one user. The same cases against a scripted
//! peer are in `bad_input.rs`.

#![allow(clippy::unwrap_used)]

/// Named `kafka::…`, for the broker they run against.
mod kafka {
    use std::time::Duration;

    use klife::{Client, ProducerRecord, SaslConfig, TlsConfig};
    use klife_conformance::kafka::{self as cluster, Listener};
    use klife_conformance::unique_topic;

    /// Far longer than any case needs: reaching it means something hung.
    const HANG_GUARD: Duration = Duration::from_secs(60);

    async fn connect(
        listener: Listener,
        tls: Option<TlsConfig>,
        sasl: Option<SaslConfig>,
    ) -> Result<Client, klife::Error> {
        let mut b = Client::builder()
            .bootstrap_servers(cluster::addresses(listener))
            .connect_timeout(Duration::from_secs(10))
            .request_timeout(Duration::from_secs(20));
        if let Some(t) = tls {
            b = b.tls(t);
        }
        if let Some(s) = sasl {
            b = b.sasl(s);
        }
        tokio::time::timeout(HANG_GUARD, b.build()).await.expect("connecting hung")
    }

    fn trusted() -> TlsConfig {
        TlsConfig::new().with_root_certificates_file(cluster::ca_file())
    }

    /// Writes a record and reads it back: the connection really works, not only the
    /// handshake.
    async fn round_trip(client: &Client) {
        let topic = unique_topic("secure");
        client.create_topic(&topic, 1).await.unwrap();
        let written = client.produce(ProducerRecord::new(topic.clone(), "over a secured listener")).await.unwrap();
        let fetched = client.fetch(&topic, written.partition, written.offset).await.unwrap();
        assert_eq!(fetched.records.first().map(|r| r.value.as_deref()), Some(Some(&b"over a secured listener"[..])));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn tls_with_the_right_ca_connects_to_every_broker() {
        let client = connect(Listener::Ssl, Some(trusted()), None).await.unwrap();
        assert_eq!(client.cluster().metadata().brokers.len(), cluster::NODES);
        for b in client.cluster().metadata().brokers.values() {
            assert_eq!(b.host, "localhost", "the SSL listener is advertised by the certificate's name");
        }
        round_trip(&client).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn tls_with_a_wrong_ca_is_refused_with_advice() {
        // Another CA of the same name: rustls finds it by name, and its signature fails.
        let other = klife_testkit::TestCertificates::localhost().unwrap();
        let err = connect(Listener::Ssl, Some(TlsConfig::new().with_root_certificates_pem(other.ca_pem())), None)
            .await
            .unwrap_err();
        let text = err.to_string();
        assert!(err.is_tls() && !err.is_retriable(), "{text}");
        assert!(text.contains("BadSignature") && text.contains("check the root certificates"), "{text}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_hostname_mismatch_is_refused_unless_explicitly_allowed() {
        let err =
            connect(Listener::Ssl, Some(trusted().with_server_name("kafka.example.com")), None).await.unwrap_err();
        assert!(err.is_tls(), "{err}");
        assert!(err.to_string().contains("dangerous_disable_hostname_verification"), "{err}");
        let client = connect(
            Listener::Ssl,
            Some(trusted().with_server_name("kafka.example.com").dangerous_disable_hostname_verification()),
            None,
        )
        .await
        .unwrap();
        assert_eq!(client.cluster().metadata().brokers.len(), cluster::NODES);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn plaintext_to_a_tls_listener_fails_within_the_timeout() {
        let err = connect(Listener::Ssl, None, None).await.unwrap_err();
        let text = err.to_string();
        assert!(!err.is_tls() || text.contains("TLS"), "{text}");
        assert!(text.contains("localhost:"), "the error names the address: {text}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn scram_sha256_and_sha512_over_tls() {
        for sasl in [
            SaslConfig::scram_sha256(cluster::SASL_USER, cluster::SASL_PASSWORD),
            SaslConfig::scram_sha512(cluster::SASL_USER, cluster::SASL_PASSWORD),
        ] {
            let client = connect(Listener::SaslSsl, Some(trusted()), Some(sasl)).await.unwrap();
            assert_eq!(client.cluster().metadata().brokers.len(), cluster::NODES);
            round_trip(&client).await;
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn plain_over_plaintext() {
        let sasl = SaslConfig::plain(cluster::SASL_USER, cluster::SASL_PASSWORD);
        let client = connect(Listener::SaslPlaintext, None, Some(sasl)).await.unwrap();
        round_trip(&client).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_wrong_password_is_an_authentication_error_without_the_password() {
        let cases = [
            (Listener::SaslSsl, SaslConfig::scram_sha256(cluster::SASL_USER, "not-the-password")),
            (Listener::SaslSsl, SaslConfig::scram_sha512(cluster::SASL_USER, "not-the-password")),
            (Listener::SaslPlaintext, SaslConfig::plain(cluster::SASL_USER, "not-the-password")),
        ];
        for (listener, sasl) in cases {
            let mechanism = sasl.mechanism();
            let tls = (listener == Listener::SaslSsl).then(trusted);
            let err = connect(listener, tls, Some(sasl)).await.unwrap_err();
            let text = err.to_string();
            assert!(err.is_authentication() && !err.is_retriable(), "{mechanism}: {text}");
            assert!(text.contains(mechanism) && text.contains("SASL_AUTHENTICATION_FAILED"), "{text}");
            assert!(!text.contains("not-the-password") && !format!("{err:?}").contains("not-the-password"));
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_mechanism_the_listener_lacks_names_those_it_offers() {
        let err = connect(
            Listener::SaslSsl,
            Some(trusted()),
            Some(SaslConfig::plain(cluster::SASL_USER, cluster::SASL_PASSWORD)),
        )
        .await
        .unwrap_err();
        let text = err.to_string();
        assert!(err.is_authentication(), "{text}");
        assert!(text.contains("does not enable PLAIN") && text.contains("SCRAM-SHA-512"), "{text}");
        let err = connect(
            Listener::SaslPlaintext,
            None,
            Some(SaslConfig::scram_sha256(cluster::SASL_USER, cluster::SASL_PASSWORD)),
        )
        .await
        .unwrap_err();
        let text = err.to_string();
        assert!(text.contains("does not enable SCRAM-SHA-256") && text.contains("PLAIN"), "{text}");
    }
}
