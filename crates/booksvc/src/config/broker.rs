//! RabbitMQ and the event consumer: `AMQP_URL`, `CONSUMER_*`.

use crate::cache::InvalidationSettings;
use crate::consumer::{self, ConsumerSettings};

use super::Settings;

impl Settings {
    /// The event consumer's settings, or `None` when `CONSUMER_ENABLED` is false.
    pub fn consumer_settings(&self) -> Option<ConsumerSettings> {
        if !self.consumer_enabled {
            return None;
        }
        let defaults = ConsumerSettings::new(self.amqp_url.clone());
        Some(ConsumerSettings {
            prefetch: self.consumer_prefetch,
            max_attempts: self
                .consumer_max_attempts
                .unwrap_or_else(|| consumer::default_max_attempts(&self.consumer_retry_delays)),
            retry_delays: self.consumer_retry_delays.clone(),
            reconnect_max: self.consumer_reconnect_max,
            ..defaults
        })
    }

    /// The local layer's event subscription (on the consumer's broker and reconnect cap).
    pub fn invalidation_settings(&self) -> InvalidationSettings {
        InvalidationSettings {
            reconnect_max: self.consumer_reconnect_max,
            ..InvalidationSettings::new(self.amqp_url.clone())
        }
    }
}

pub(super) fn parse_bool(text: &str) -> Result<bool, String> {
    match text.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Ok(true),
        "false" | "0" | "no" | "off" => Ok(false),
        _ => Err("expected true or false".to_owned()),
    }
}

pub(super) fn parse_prefetch(text: &str) -> Result<u16, String> {
    match text.trim().parse::<u16>() {
        Ok(count) if count >= 1 => Ok(count),
        _ => Err("expected a whole number from 1 to 65535".to_owned()),
    }
}
