//! Secrets are masked before anything else is printed and appear in no output.

use sandbox::app::HealthMode;

use crate::util::{run_main, with, Double};

const TOKEN: &str = "fm2_sEcReT-token-value-0123456789";
const GITHUB_TOKEN: &str = "ghs_AnotherSecretValue987654";

#[tokio::test]
async fn secrets_are_masked_first_and_appear_in_no_output_even_when_a_deploy_fails() {
    let double = Double::start("web:v1").await;
    double.broken("web:v2", HealthMode::Error500);
    // The secret also travels in the health URL, so failures would print it if unredacted.
    let url = format!("{}/health?key={TOKEN}", double.app.url());
    let inputs =
        with(with(with(double.inputs("web:v2"), "token", TOKEN), "github-token", GITHUB_TOKEN), "health-url", &url);
    let ran = run_main(&inputs).await;
    assert_eq!(ran.code, 1, "{ran}");

    let mut lines = ran.stdout.lines();
    let first_two: Vec<_> = lines.by_ref().take(2).collect();
    assert!(first_two.iter().any(|l| *l == format!("::add-mask::{TOKEN}")), "{first_two:?}");
    assert!(first_two.iter().any(|l| *l == format!("::add-mask::{GITHUB_TOKEN}")), "{first_two:?}");
    let rest: String = lines.collect::<Vec<_>>().join("\n");
    for secret in [TOKEN, GITHUB_TOKEN] {
        assert!(!rest.contains(secret), "stdout leaks a secret");
        assert!(!ran.stderr.contains(secret), "stderr leaks a secret");
        for file in &ran.files {
            assert!(!file.contains(secret), "a runner file leaks a secret:\n{file}");
        }
    }
    assert!(ran.summary.contains("/health?…") && !ran.summary.contains("key="), "the query is not shown at all: {ran}");
}

#[tokio::test]
async fn bad_input_does_not_leak_a_secret_either() {
    let ran = run_main(&[("token".into(), TOKEN.into()), ("app".into(), TOKEN.into())]).await;
    assert_eq!(ran.code, 2);
    let after_mask: String = ran.stdout.lines().skip(1).collect::<Vec<_>>().join("\n");
    assert!(!after_mask.contains(TOKEN) && !ran.summary.contains(TOKEN) && !ran.stderr.contains(TOKEN), "{ran}");
}

#[tokio::test]
async fn a_one_character_token_is_masked_without_changing_any_other_text() {
    let double = Double::start("web:v1").await;
    let ran = run_main(&with(double.inputs("web:v2"), "token", "x")).await;
    assert_eq!(ran.code, 0, "{ran}");
    assert!(ran.summary.contains("dateFormat x\n"), "the gantt chart keeps its words: {ran}");
    assert!(!ran.summary.contains("e***it") && !ran.summary.contains("***is"), "{ran}");
    assert!(ran.summary.lines().next().unwrap().contains("Deployed `web:v2`"), "{ran}");
}

#[tokio::test]
async fn a_token_in_a_health_url_leaks_in_no_encoding() {
    let double = Double::start("web:v1").await;
    double.broken("web:v2", HealthMode::Error500);
    let token = "fm2_a/b+c=d&e";
    let encoded: String = url::form_urlencoded::byte_serialize(token.as_bytes()).collect();
    let url = format!("{}/health?key={encoded}", double.app.url());
    let ran = run_main(&with(with(double.inputs("web:v2"), "token", token), "health-url", &url)).await;
    assert_eq!(ran.code, 1, "{ran}");
    let after_masks: String =
        ran.stdout.lines().filter(|l| !l.starts_with("::add-mask::")).collect::<Vec<_>>().join("\n");
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(token);
    for form in [token, encoded.as_str(), b64.as_str()] {
        assert!(!after_masks.contains(form), "stdout leaks {form}");
        assert!(!ran.stderr.contains(form), "stderr leaks {form}");
        assert!(ran.files.iter().all(|f| !f.contains(form)), "a runner file leaks {form}");
    }
    assert!(ran.summary.contains("/health?…") && !ran.summary.contains("key="), "{ran}");
}
