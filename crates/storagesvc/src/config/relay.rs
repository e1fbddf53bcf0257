//! The outbox relay: `AMQP_URL` and `OUTBOX_*`.

use crate::relay::RelaySettings;

use super::Settings;

impl Settings {
    /// The outbox relay's part of the settings.
    pub fn relay_settings(&self) -> RelaySettings {
        RelaySettings {
            amqp_url: self.amqp_url.clone(),
            batch_size: self.outbox_batch_size as usize,
            publish_window: self.outbox_publish_window as usize,
            poll_interval: self.outbox_poll_interval,
            confirm_timeout: self.outbox_confirm_timeout,
            reconnect_max: self.outbox_reconnect_max,
            retention: self.outbox_retention,
            topology: events::Topology::default(),
            db_timeout: crate::database::step_timeout(self.db_statement_timeout),
        }
    }
}
