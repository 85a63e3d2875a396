//! Config resolution: defaults, file, environment and flags, and the errors of each.

use super::*;

#[test]
fn the_built_in_defaults_parse_with_the_published_prices_and_limits() {
    let settings = parse(DEFAULT_CONFIG.parse().unwrap()).unwrap();
    assert_eq!(settings.prices, PriceTable::default());
    assert_eq!(settings.routing, Routing::default());
    assert_eq!(
        (settings.limits.creates_per_minute, settings.limits.max_in_flight),
        (80, 40)
    );
    assert_eq!(settings.defaults.aspect_ratio, AspectRatio::Landscape16x9);
    assert_eq!(settings.limits.give_up_after, std::time::Duration::from_secs(600));
}

#[test]
fn the_luma_timeouts_default_to_the_clients_and_a_bad_or_zero_one_is_named() {
    let settings = parse(DEFAULT_CONFIG.parse().unwrap()).unwrap();
    let defaults = darkroom_luma::ClientConfig::new("http://127.0.0.1:1", ApiKey::new("k".into()));
    assert_eq!(settings.luma.connect_timeout, defaults.connect_timeout);
    assert_eq!(settings.luma.request_timeout, defaults.request_timeout);
    assert_eq!(settings.luma.download_timeout, defaults.download_timeout);
    let mut table: toml::Table = DEFAULT_CONFIG.parse().unwrap();
    merge(
        &mut table,
        "[luma]
request_timeout = \"2m\""
            .parse()
            .unwrap(),
    );
    let settings = parse(table).unwrap();
    assert_eq!(settings.luma.request_timeout, std::time::Duration::from_secs(120));
    assert_eq!(
        settings.luma.connect_timeout,
        std::time::Duration::from_secs(10),
        "the rest keep their defaults"
    );
    for (key, bad) in [
        ("connect_timeout", "\"0s\""),
        ("download_timeout", "120"),
        ("request_timeout", "\"soon\""),
    ] {
        let mut table: toml::Table = DEFAULT_CONFIG.parse().unwrap();
        merge(&mut table, format!("[luma]\n{key} = {bad}").parse().unwrap());
        let error = parse(table).unwrap_err().to_string();
        assert!(error.contains(key), "{key} = {bad}: {error}");
    }
}

#[test]
fn give_up_after_is_a_duration_and_a_bad_one_is_named() {
    let mut table: toml::Table = DEFAULT_CONFIG.parse().unwrap();
    merge(&mut table, "[limits]\ngive_up_after = \"1h30m\"".parse().unwrap());
    assert_eq!(
        parse(table).unwrap().limits.give_up_after,
        std::time::Duration::from_secs(5400)
    );
    for bad in ["\"ten minutes\"", "600", "\"0s\""] {
        let mut table: toml::Table = DEFAULT_CONFIG.parse().unwrap();
        merge(
            &mut table,
            format!("[limits]\ngive_up_after = {bad}").parse().unwrap(),
        );
        let error = parse(table).unwrap_err().to_string();
        assert!(error.contains("give_up_after"), "{bad}: {error}");
    }
}

#[test]
fn unknown_keys_and_imprecise_prices_are_errors() {
    let mut table: toml::Table = DEFAULT_CONFIG.parse().unwrap();
    merge(&mut table, "[limits]\ncreates_per_minit = 5".parse().unwrap());
    assert!(parse(table)
        .unwrap_err()
        .to_string()
        .contains("creates_per_minit"));
    let mut table: toml::Table = DEFAULT_CONFIG.parse().unwrap();
    merge(
        &mut table,
        "[prices]\n\"photon-1\" = \"0.0150001\"".parse().unwrap(),
    );
    assert!(parse(table).unwrap_err().to_string().contains("micro-dollar"));
}

#[test]
fn pacing_learns_by_default_can_be_pinned_strict_and_a_bad_value_is_named() {
    use darkroom_engine::limits::Pacing;
    let settings = parse(DEFAULT_CONFIG.parse().unwrap()).unwrap();
    assert_eq!(settings.limits.pacing, Pacing::Learn);
    let mut table: toml::Table = DEFAULT_CONFIG.parse().unwrap();
    merge(&mut table, "[limits]\npacing = \"strict\"".parse().unwrap());
    assert_eq!(parse(table).unwrap().limits.pacing, Pacing::Strict);
    let mut table: toml::Table = DEFAULT_CONFIG.parse().unwrap();
    merge(&mut table, "[limits]\npacing = \"burst\"".parse().unwrap());
    let error = format!("{:#}", parse(table).unwrap_err());
    assert!(error.contains("pacing") || error.contains("burst"), "{error}");
    assert!(error.contains("learn") && error.contains("strict"), "{error}");
}
