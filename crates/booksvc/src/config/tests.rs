use super::*;

fn parse(args: &[&str]) -> Result<Settings, clap::Error> {
    let argv = std::iter::once("booksvc").chain(args.iter().copied());
    Settings::try_parse_from(argv).and_then(Settings::checked)
}

#[test]
fn listen_addresses_accept_the_three_forms() {
    let cases = [
        ("8081", Some("0.0.0.0:8081")),
        (":8081", Some("0.0.0.0:8081")),
        ("0", Some("0.0.0.0:0")),
        ("127.0.0.1:9000", Some("127.0.0.1:9000")),
        ("abc", None),
        (":", None),
        ("65536", None),
    ];
    for (input, expected) in cases {
        let parsed = parse_listen_addr(input).ok().map(|addr| addr.to_string());
        assert_eq!(parsed.as_deref(), expected, "input {input:?}");
    }
}

#[test]
fn redis_comes_from_the_address_the_url_or_the_default() {
    let cases: [(&[&str], &str); 3] = [
        (&[], "redis://localhost:6379"),
        (&["--redis-addr", "cache:6380"], "redis://cache:6380"),
        (
            &["--redis-url", "redis://:pw@cache:6380/2"],
            "redis://:pw@cache:6380/2",
        ),
    ];
    for (args, expected) in cases {
        let settings = parse(args).expect("parses");
        assert_eq!(settings.redis_url().expose(), expected, "args {args:?}");
    }
    for bad in [
        "cache",
        "cache:port",
        "cache:0",
        ":6379",
        "redis://cache:6379",
    ] {
        assert!(
            parse_redis_addr(bad).is_err(),
            "REDIS_ADDR {bad:?} must be refused"
        );
    }
    assert!(parse_redis_url("http://cache").is_err(), "not a Redis URL");
    let both = parse(&["--redis-addr", "a:1", "--redis-url", "redis://b:2"]);
    assert!(
        both.is_err(),
        "REDIS_ADDR and REDIS_URL together are ambiguous"
    );
}

#[test]
fn the_local_layer_is_sized_by_its_variables_and_off_without_events() {
    let defaults = parse(&[]).expect("parses").local_cache_settings();
    assert_eq!(defaults.max_entries, 10_000);
    assert_eq!(defaults.max_age, Duration::from_secs(1));
    assert_eq!(defaults.fresh_ttl, Duration::from_secs(5));
    let off = parse(&["--local-cache-max-entries", "0"]).expect("parses");
    assert_eq!(off.local_cache_settings().max_entries, 0);
    let no_events = parse(&["--consumer-enabled", "false"]).expect("parses");
    assert_eq!(no_events.local_cache_settings().max_entries, 0);
    assert!(parse(&["--local-cache-ttl", "0s"]).is_err(), "a zero cap");
    assert!(parse(&["--local-cache-max-entries", "-1"]).is_err());
}

#[test]
fn durations_counts_and_ratios_refuse_bad_values() {
    assert_eq!(
        parse_duration("0s"),
        Ok(Duration::ZERO),
        "a zero TTL is allowed"
    );
    assert_eq!(
        parse_positive_duration("500ms"),
        Ok(Duration::from_millis(500))
    );
    assert!(
        parse_positive_duration("0s").is_err(),
        "a zero budget is not"
    );
    assert!(parse_duration("5").is_err(), "a unit is required");
    // Durations are added to `Instant`s: a huge one would overflow (a panic), so they
    // are capped at a year.
    assert!(parse_duration("366days").is_err(), "over a year");
    assert!(parse_positive_duration("200years").is_err(), "over a year");
    assert_eq!(
        parse_duration("365days"),
        Ok(Duration::from_secs(365 * 86_400))
    );
    assert!(parse_count::<1, 100>("0").is_err(), "below the minimum");
    assert_eq!(parse_ratio("0.25"), Ok(0.25));
    for bad in ["0", "-1", "NaN", "half"] {
        assert!(parse_ratio(bad).is_err(), "ratio {bad:?}");
    }
    assert!(parse_http_url("localhost:8082").is_err(), "no scheme");
    assert!(parse_prefix("has space").is_err(), "spaces in a key prefix");
}

#[test]
fn defaults_match_the_design() {
    let settings = parse(&[]).expect("defaults parse");
    assert_eq!(settings.http_addr.port(), 8081);
    assert_eq!(settings.storagesvc_url, "http://localhost:8082");
    assert_eq!(settings.request_budget, Duration::from_secs(1));
    assert_eq!(settings.breaker_timeout, Duration::from_secs(5));
    assert_eq!(settings.redis_timeout, Duration::from_millis(100));
    assert_eq!(settings.stale_soft_timeout, Duration::from_millis(50));
    assert_eq!(
        settings.breaker_settings().open_timeout,
        Duration::from_secs(5)
    );
    assert_eq!(settings.retry_settings().max_attempts, 4);
}

#[test]
fn consumer_settings_come_from_their_variables_with_documented_defaults() {
    let settings = parse(&[]).expect("defaults parse");
    let consumer = settings.consumer_settings().expect("enabled by default");
    assert_eq!(consumer.amqp_url.addresses(), "localhost:5672");
    assert_eq!(consumer.prefetch, 32);
    assert_eq!(consumer.retry_delays, events::DEFAULT_RETRY_DELAYS.to_vec());
    assert_eq!(consumer.max_attempts, 5, "one attempt plus one per delay");
    assert_eq!(consumer.reconnect_max, Duration::from_secs(5));

    let args = [
        "--consumer-retry-delays",
        "200ms,1s",
        "--consumer-max-attempts",
        "7",
    ];
    let consumer = parse(&args)
        .expect("parses")
        .consumer_settings()
        .expect("enabled");
    assert_eq!(
        consumer.retry_delays,
        [Duration::from_millis(200), Duration::from_secs(1)]
    );
    assert_eq!(consumer.max_attempts, 7);

    let disabled = parse(&["--consumer-enabled", "false"]).expect("parses");
    assert!(disabled.consumer_settings().is_none());
    for bad in [
        &["--consumer-retry-delays", "1s,soon"][..],
        &["--consumer-prefetch", "0"],
        &["--consumer-enabled", "maybe"],
        &["--amqp-url", "http://broker"],
    ] {
        assert!(parse(bad).is_err(), "{bad:?} must be refused");
    }
}

#[test]
fn settings_handed_to_the_broker_clients_never_debug_print_the_password() {
    let settings = Settings::try_parse_from([
        "booksvc",
        "--amqp-url",
        "amqp://booksvc:Pr0dPass@mq:5672/%2f",
        "--redis-url",
        "redis://:Pr0dPass@cache:6379",
    ])
    .expect("valid settings");
    let consumer = settings.consumer_settings().expect("enabled by default");
    let printed = [
        format!("{settings:?}"),
        format!("{consumer:?}"),
        format!("{:?}", settings.invalidation_settings()),
    ];
    for text in printed {
        assert!(!text.contains("Pr0dPass"), "leaked: {text}");
    }
}

#[test]
fn the_stale_soft_timeout_is_a_duration_and_may_be_zero() {
    let never_wait = parse(&["--stale-soft-timeout", "0s"]).expect("zero parses");
    assert_eq!(never_wait.stale_soft_timeout, Duration::ZERO);
    let err = parse(&["--stale-soft-timeout", "fast"]).expect_err("not a duration");
    assert!(
        describe_error(&err).starts_with("invalid STALE_SOFT_TIMEOUT \"fast\""),
        "{err}"
    );
}

#[test]
fn a_bad_value_is_described_in_one_line_naming_the_variable() {
    let err = parse(&["--request-budget", "soon"]).expect_err("not a duration");
    assert_eq!(
        describe_error(&err),
        r#"invalid REQUEST_BUDGET "soon": expected a duration like 500ms, 5s or 2m"#
    );
    let err = parse(&[
        "--retry-initial-interval",
        "1s",
        "--retry-max-interval",
        "10ms",
    ])
    .expect_err("cap below the start");
    assert!(
        describe_error(&err).starts_with("invalid RETRY_MAX_INTERVAL"),
        "{err}"
    );
}

#[test]
fn each_default_is_the_rust_value_of_its_component() {
    let settings = parse(&[]).expect("defaults parse");
    assert_eq!(settings.breaker_settings(), BreakerSettings::default());
    assert_eq!(settings.retry_settings(), RetrySettings::default());
    assert_eq!(settings.cache_max_age, DEFAULT_MAX_AGE);
    assert_eq!(settings.redis_timeout, DEFAULT_OP_TIMEOUT);
    assert_eq!(settings.cache_prefix, DEFAULT_PREFIX);
    assert_eq!(settings.local_cache_max_entries, local::DEFAULT_MAX_ENTRIES);
    assert_eq!(settings.local_cache_ttl, local::DEFAULT_MAX_AGE);
    assert_eq!(settings.consumer_prefetch, consumer::DEFAULT_PREFETCH);
    assert_eq!(
        settings.consumer_reconnect_max,
        consumer::DEFAULT_RECONNECT_MAX
    );
    // `--help` shows each in the form the parser reads back.
    for duration in [
        Duration::ZERO,
        Duration::from_millis(50),
        Duration::from_secs(60),
    ] {
        assert_eq!(
            parse_duration(&default_text::duration(duration)),
            Ok(duration)
        );
    }
    assert_eq!(default_text::duration(DEFAULT_MAX_AGE), "24h");
}
