//! The errors of starting and controlling a fake cluster.

/// Why a fake cluster could not start, or a control call could not be done.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Binding or re-binding a broker's listener failed.
    #[error("fake cluster: cannot listen on {address}: {source}")]
    Bind {
        /// The address.
        address: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The TLS certificate or key could not be used.
    #[error("fake cluster: TLS setup failed: {0}")]
    Tls(String),
    /// A builder or control argument is invalid (names what and why).
    #[error("fake cluster: {0}")]
    InvalidArgument(String),
    /// The topic or partition does not exist.
    #[error("fake cluster: no topic-partition {topic}-{partition}")]
    UnknownPartition {
        /// The topic.
        topic: String,
        /// The partition.
        partition: i32,
    },
    /// The broker id is not one of the cluster's.
    #[error("fake cluster: no broker {0}")]
    UnknownBroker(i32),
}
