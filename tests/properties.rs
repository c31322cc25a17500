//! Property tests: every input a user controls and every provider answer the code
//! parses, generated, must never panic. The same generators drive the long fuzz run
//! in `bench/fuzz` (its seeds are in bench/fuzz-seeds.txt).

use proptest::prelude::*;
use safe_deploy::fuzz;

#[path = "../bench/src/strategies.rs"]
mod strategies;

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn any_inputs_are_validated_without_a_panic(pairs in strategies::inputs()) {
        fuzz::inputs(&pairs, std::path::Path::new("/nonexistent-workspace"));
    }

    #[test]
    fn any_input_value_is_parsed_without_a_panic(text in strategies::text()) {
        fuzz::values(&text);
    }

    #[test]
    fn any_fly_answer_is_read_without_a_panic(bytes in strategies::answer()) {
        fuzz::fly_answer(&bytes);
    }

    #[test]
    fn any_fly_toml_becomes_a_config_or_an_error_without_a_panic(text in strategies::fly_toml(), existing in strategies::answer()) {
        fuzz::fly_toml(&text, &existing);
    }

    #[test]
    fn any_health_body_is_judged_without_a_panic(body in strategies::text(), version in strategies::text()) {
        fuzz::health_body(&body, &version);
    }

    #[test]
    fn any_github_payload_is_read_without_a_panic(bytes in strategies::answer()) {
        fuzz::github_payload(&bytes);
    }

    #[test]
    fn a_long_secret_never_survives_redaction(secret in "[!-~]{8,40}", text in strategies::text()) {
        prop_assert!(fuzz::redaction(&secret, &text));
    }
}
