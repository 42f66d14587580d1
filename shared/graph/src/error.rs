//! The Graph client's error: the port's [`GraphError`], made from reqwest's failures here.

pub use shadowsync_ports::GraphError;

/// A reqwest failure as a [`GraphError`]: a timeout, an undecodable body, or the network.
pub(crate) fn from_reqwest(e: reqwest::Error) -> GraphError {
    if e.is_timeout() {
        GraphError::Timeout
    } else if e.is_decode() {
        GraphError::Decode(Box::new(e))
    } else {
        GraphError::Network(Box::new(e))
    }
}
