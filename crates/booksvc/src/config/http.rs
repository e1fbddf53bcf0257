//! The HTTP server's part of the settings (`HTTP_*`).

use crate::serve::ConnectionLimits;

use super::Settings;

impl Settings {
    /// How each HTTP connection is bounded (`HTTP_HEADER_READ_TIMEOUT`, `HTTP_MAX_CONNECTIONS`).
    pub fn connection_limits(&self) -> ConnectionLimits {
        ConnectionLimits {
            header_read_timeout: self.http_header_read_timeout,
            max_connections: self.http_max_connections as usize,
        }
    }
}
