//! A worker group's settings, their limits, and their text form.

use std::str::FromStr;
use std::time::Duration;

use crate::error::ConfigError;
use crate::log::format::{DELAY_MAX_US, PRIORITY_MAX as PRIORITY_MAX_U8};
use crate::log::{KeyPattern, StartAt};

/// Highest message priority ([`Message::priority`](crate::Message::priority)); 0 is the lowest and the default.
pub const PRIORITY_MAX: u8 = PRIORITY_MAX_U8;

/// Longest delay of a message ([`Message::deliver_after`](crate::Message::deliver_after))
/// or a retry ([`Delivery::nack`](crate::Delivery::nack)): 30 days.
pub const DELAY_MAX: Duration = Duration::from_micros(DELAY_MAX_US);

/// Longest visibility timeout, and the most [`Delivery::extend`](crate::Delivery::extend)
/// adds at once: 12 hours, as in Amazon SQS.
pub const VISIBILITY_MAX: Duration = Duration::from_secs(12 * 3600);

/// Most attempts a group may allow a message.
pub const ATTEMPTS_MAX: u32 = 1000;

/// Largest window (unsettled messages a group tracks at once).
pub const WINDOW_MAX: usize = 1 << 24;

/// The settings of a worker group, for [`Topic::worker_with`](crate::Topic::worker_with).
///
/// ```
/// use std::time::Duration;
/// use tollgate::{KeyPattern, QueueConfig};
///
/// let config = QueueConfig {
///     visibility_timeout: Duration::from_secs(10),
///     max_attempts: 3,
///     filter: Some(KeyPattern::new("order.#")?),
///     ..QueueConfig::default()
/// };
/// // The same, as text (for configuration files and the command line):
/// let parsed: QueueConfig = "visibility_timeout=10s, max_attempts=3, filter=order.#".parse()?;
/// assert_eq!(parsed, config);
/// assert!("max_attempt=3".parse::<QueueConfig>().is_err()); // unknown option
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueConfig {
    /// How long a delivery stays with its worker before the message is
    /// handed to another one (if not settled or extended). Default 30 s;
    /// 1 ms to [`VISIBILITY_MAX`].
    pub visibility_timeout: Duration,
    /// Deliveries a message gets before it is dead-lettered. Default 5;
    /// 1 to [`ATTEMPTS_MAX`].
    pub max_attempts: u32,
    /// The topic dead letters go to; `None` (the default) means
    /// `<topic>.dlq`. It must not be the topic itself.
    pub dead_letter_topic: Option<String>,
    /// Only messages whose key matches are the group's; the others are
    /// skipped (and count as settled). Default: every message.
    pub filter: Option<KeyPattern>,
    /// Where a group with no saved state starts: at the oldest retained
    /// message (default) or after the newest.
    pub start: StartAt,
    /// Most unsettled messages (ready, delayed or in flight) the group tracks
    /// at once; messages past it wait until earlier ones are settled.
    /// Priorities order the messages inside this window. Default 65,536; 1 to
    /// [`WINDOW_MAX`].
    pub window: usize,
}

impl Default for QueueConfig {
    fn default() -> Self {
        QueueConfig {
            visibility_timeout: Duration::from_secs(30),
            max_attempts: 5,
            dead_letter_topic: None,
            filter: None,
            start: StartAt::Earliest,
            window: 65_536,
        }
    }
}

impl QueueConfig {
    /// Checks every setting against its range.
    pub(crate) fn validate(&self) -> Result<(), &'static str> {
        if self.visibility_timeout < Duration::from_millis(1) || self.visibility_timeout > VISIBILITY_MAX {
            return Err("visibility_timeout must be 1 ms to 12 h");
        }
        if self.max_attempts == 0 || self.max_attempts > ATTEMPTS_MAX {
            return Err("max_attempts must be 1 to 1000");
        }
        if self.window == 0 || self.window > WINDOW_MAX {
            return Err("window must be 1 to 16777216");
        }
        Ok(())
    }
}

impl FromStr for QueueConfig {
    type Err = ConfigError;

    /// Parses `name=value` pairs separated by commas: `visibility_timeout`
    /// and durations as `250ms`, `30s`, `5m`, `1h`; `max_attempts`;
    /// `dead_letter_topic`; `filter` (a [`KeyPattern`]); `start`
    /// (`earliest` or `latest`); `window`. Unknown names, repeated names and
    /// values out of range are errors. Missing names keep their defaults.
    fn from_str(text: &str) -> Result<Self, ConfigError> {
        let mut config = QueueConfig::default();
        let mut seen = Vec::new();
        for item in text.split(',').map(str::trim).filter(|item| !item.is_empty()) {
            let error = |reason| ConfigError { option: item.to_owned(), reason };
            let (name, value) = item.split_once('=').ok_or_else(|| error("expected name=value"))?;
            let (name, value) = (name.trim(), value.trim());
            if seen.contains(&name) {
                return Err(error("this option is given twice"));
            }
            seen.push(name);
            match name {
                "visibility_timeout" => {
                    config.visibility_timeout = parse_duration(value).ok_or_else(|| error("not a duration like 30s"))?
                }
                "max_attempts" => config.max_attempts = value.parse().map_err(|_| error("not a number"))?,
                "dead_letter_topic" => config.dead_letter_topic = Some(value.to_owned()),
                "filter" => config.filter = Some(KeyPattern::new(value).map_err(|e| error(e.reason))?),
                "start" => {
                    config.start = match value {
                        "earliest" => StartAt::Earliest,
                        "latest" => StartAt::Latest,
                        _ => return Err(error("start is earliest or latest")),
                    }
                }
                "window" => config.window = value.parse().map_err(|_| error("not a number"))?,
                _ => return Err(error("unknown option")),
            }
        }
        config.validate().map_err(|reason| ConfigError { option: text.to_owned(), reason })?;
        Ok(config)
    }
}

/// `250ms`, `30s`, `5m`, `1h`.
fn parse_duration(text: &str) -> Option<Duration> {
    let digits = text.find(|c: char| !c.is_ascii_digit())?;
    let (number, unit) = text.split_at(digits);
    let n: u64 = number.parse().ok()?;
    match unit {
        "ms" => Some(Duration::from_millis(n)),
        "s" => Some(Duration::from_secs(n)),
        "m" => Some(Duration::from_secs(n.checked_mul(60)?)),
        "h" => Some(Duration::from_secs(n.checked_mul(3600)?)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_option_and_refuses_bad_ones() {
        let config: QueueConfig =
            "visibility_timeout=250ms,max_attempts=7,dead_letter_topic=dead,filter=a.*,start=latest,window=10"
                .parse()
                .unwrap();
        assert_eq!(config.visibility_timeout, Duration::from_millis(250));
        assert_eq!(config.max_attempts, 7);
        assert_eq!(config.dead_letter_topic.as_deref(), Some("dead"));
        assert_eq!(config.filter.as_ref().map(KeyPattern::as_str), Some("a.*"));
        assert_eq!(config.start, StartAt::Latest);
        assert_eq!(config.window, 10);
        assert_eq!("".parse::<QueueConfig>().unwrap(), QueueConfig::default());
        for bad in [
            "colour=blue",
            "max_attempts",
            "max_attempts=0",
            "max_attempts=1001",
            "max_attempts=x",
            "visibility_timeout=0ms",
            "visibility_timeout=13h",
            "visibility_timeout=30",
            "visibility_timeout=99999999999999999999h",
            "window=0",
            "start=middle",
            "filter=ord*",
            "max_attempts=2,max_attempts=3",
        ] {
            assert!(bad.parse::<QueueConfig>().is_err(), "{bad} was accepted");
        }
    }
}
