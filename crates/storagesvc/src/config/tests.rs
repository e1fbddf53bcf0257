use super::database::parse_database_url;
use super::http::{parse_byte_size, parse_secret};
use super::parse::*;
use super::*;

#[test]
fn listen_addresses_accept_the_three_forms() {
    let cases = [
        ("8082", Some("0.0.0.0:8082")),
        (":8082", Some("0.0.0.0:8082")),
        ("0", Some("0.0.0.0:0")),
        ("127.0.0.1:9000", Some("127.0.0.1:9000")),
        ("[::1]:9000", Some("[::1]:9000")),
        ("abc", None),
        ("", None),
        (":", None),
        ("65536", None),
        (":-1", None),
        ("127.0.0.1:", None),
    ];
    for (input, expected) in cases {
        let parsed = parse_listen_addr(input).ok().map(|addr| addr.to_string());
        assert_eq!(parsed.as_deref(), expected, "input {input:?}");
    }
}

#[test]
fn durations_are_humantime_and_timeouts_must_be_positive() {
    let cases = [
        ("500ms", Some(Duration::from_millis(500))),
        ("5s", Some(Duration::from_secs(5))),
        ("2m", Some(Duration::from_secs(120))),
        ("1h 30m", Some(Duration::from_secs(5400))),
        ("365days", Some(Duration::from_secs(365 * 86_400))),
        // Added to `Instant`s, a huge duration would overflow: capped at a year.
        ("366days", None),
        ("200years", None),
        ("0s", None),
        ("5", None),
        ("-1s", None),
        ("soon", None),
    ];
    for (input, expected) in cases {
        assert_eq!(
            parse_positive_duration(input).ok(),
            expected,
            "input {input:?}"
        );
    }
    assert_eq!(
        parse_duration("0s"),
        Ok(Duration::ZERO),
        "retention may be zero"
    );
}

#[test]
fn byte_sizes_accept_plain_and_binary_and_decimal_units() {
    let cases = [
        ("65536", Some(65_536)),
        ("64KiB", Some(65_536)),
        ("64kb", Some(64_000)),
        ("1MiB", Some(1_048_576)),
        ("2 MB", Some(2_000_000)),
        ("0", None),
        ("2GiB", None),
        ("64 parsecs", None),
        ("KiB", None),
        ("99999999999999999999999", None),
    ];
    for (input, expected) in cases {
        assert_eq!(parse_byte_size(input).ok(), expected, "input {input:?}");
    }
}

#[test]
fn counts_formats_filters_and_secrets_reject_bad_values() {
    assert_eq!(parse_count::<1, 10>("10"), Ok(10));
    assert!(parse_count::<1, 10>("0").is_err(), "below the minimum");
    assert!(parse_count::<1, 10>("eight").is_err(), "not a number");
    assert_eq!(parse_log_format("PRETTY"), Ok(LogFormat::Pretty));
    assert!(parse_log_format("xml").is_err(), "unknown format");
    assert!(parse_log_filter("info,sqlx=warn").is_ok(), "valid filter");
    assert!(parse_log_filter("sqlx=loud").is_err(), "unknown level");
    assert!(parse_secret(" ").is_err(), "blank secret");
    assert!(parse_database_url("postgres://u:p@db:5432/crud").is_ok());
    assert!(
        parse_database_url("mysql://u:p@db/crud").is_err(),
        "not PostgreSQL"
    );
    assert!(parse_amqp_url("amqp://guest:guest@mq:5672/%2f").is_ok());
    assert!(parse_amqp_url("http://mq").is_err(), "not AMQP");
    assert_eq!(
        format!("{:?}", Secret::new("hunter2")),
        "Secret([redacted])"
    );
}

#[test]
fn defaults_match_the_design() {
    let settings = Settings::try_parse_from(["storagesvc"]).expect("defaults parse");
    assert_eq!(settings.http_addr.port(), 8082);
    assert_eq!(settings.db_acquire_timeout, Duration::from_millis(250));
    assert_eq!(settings.body_limit, 64 * 1024);
    assert_eq!(settings.outbox_batch_size, 256);
}

#[test]
fn settings_and_the_relay_config_never_debug_print_a_password() {
    let settings = Settings::try_parse_from([
        "storagesvc",
        "--database-url",
        "postgres://pg:Pr0dPass@db:5432/crud",
        "--amqp-url",
        "amqp://storagesvc:Pr0dPass@mq:5672/%2f",
    ])
    .expect("valid settings");
    for text in [
        format!("{settings:?}"),
        format!("{:?}", settings.relay_settings()),
    ] {
        assert!(!text.contains("Pr0dPass"), "leaked: {text}");
    }
}

#[test]
fn a_bad_value_is_described_in_one_line_naming_the_variable() {
    let err = Settings::try_parse_from(["storagesvc", "--http-port", "abc"])
        .expect_err("abc is not a port");
    assert_eq!(
        describe_error(&err),
        r#"invalid HTTP_PORT "abc": expected PORT, :PORT or HOST:PORT"#
    );
}
