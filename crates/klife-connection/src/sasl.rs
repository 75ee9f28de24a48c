//! stub
#![allow(missing_docs)]
use std::sync::Arc;
#[derive(Clone, Debug)]
pub enum SaslConfig {
    Plain { username: String, password: String },
    X(Arc<()>),
}
impl SaslConfig {
    pub fn mechanism(&self) -> &'static str {
        "PLAIN"
    }
    pub async fn start(&self) -> Result<Box<dyn SaslSession>, SaslError> {
        Err(SaslError)
    }
}
pub trait SaslSession: Send {
    fn mechanism(&self) -> &'static str;
    fn step(&mut self, server: Option<&[u8]>) -> Result<Option<Vec<u8>>, SaslError>;
}
#[derive(Debug)]
pub struct SaslError;
impl std::fmt::Display for SaslError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("x")
    }
}
