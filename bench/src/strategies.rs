//! Input generators for the property tests (`tests/properties.rs`, which includes this
//! file) and the long fuzz run (`bench/fuzz`): arbitrary text, and JSON and TOML shaped
//! like provider answers and fly.toml, with the field names the code reads, so most
//! cases reach deep into the parsers rather than stopping at the first brace.

use proptest::prelude::*;
use serde_json::{json, Map, Value};

/// Field names the code reads in provider answers and configs.
const KEYS: &[&str] = &[
    "id",
    "name",
    "state",
    "region",
    "instance_id",
    "config",
    "incomplete_config",
    "host_status",
    "cordoned",
    "checks",
    "events",
    "nonce",
    "image",
    "metadata",
    "fly_process_group",
    "fly_platform_version",
    "services",
    "mounts",
    "volume",
    "type",
    "status",
    "output",
    "timestamp",
    "request",
    "exit_event",
    "MonitorEvent",
    "exit_code",
    "requested_stop",
    "data",
    "description",
    "attached_machine_id",
    "message",
    "error",
    "payload",
    "safe_deploy",
    "target",
    "provider",
    "app",
    "interval",
    "grace_period",
    "internal_port",
    "env",
    "guest",
    "path",
];

pub fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        ".{0,40}",
        "[a-z0-9:/.%@=+-]{0,30}",
        Just(String::new()),
        Just("\u{0}\u{7f}\u{202e}🚀\n\r".to_string()),
        "[0-9]{1,25}(ms|s|m|h|d)?",
    ]
}

fn leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(|f| json!(f)),
        text().prop_map(Value::from),
        prop::sample::select(KEYS).prop_map(Value::from),
    ]
}

/// JSON whose objects use the code's field names.
pub fn json_value() -> impl Strategy<Value = Value> {
    leaf().prop_recursive(5, 64, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            prop::collection::vec((prop::sample::select(KEYS), inner), 0..7)
                .prop_map(|kv| Value::Object(kv.into_iter().map(|(k, v)| (k.to_string(), v)).collect::<Map<_, _>>())),
        ]
    })
}

/// A value that is usually of the expected kind, sometimes anything at all.
fn or_anything(expected: impl Strategy<Value = Value> + 'static) -> BoxedStrategy<Value> {
    prop_oneof![4 => expected, 1 => json_value()].boxed()
}

fn word(options: &'static [&'static str]) -> BoxedStrategy<Value> {
    or_anything(prop::sample::select(options).prop_map(Value::from))
}

/// A Fly machine as the Machines API answers: the fields the code reads, of the right
/// kinds mostly, with wrong kinds, odd states and missing parts mixed in.
pub fn fly_machine() -> impl Strategy<Value = Value> {
    let metadata = (word(&["app", "worker", "fly_app_release_command", "fly_app_console"]), word(&["v2", "v1", ""]))
        .prop_map(|(g, v)| json!({"fly_process_group": g, "fly_platform_version": v}));
    let check = (word(&["http", "tcp"]), word(&["/health", "/"]), word(&["1s", "15s", "bad"]))
        .prop_map(|(t, p, i)| json!({"type": t, "path": p, "interval": i, "grace_period": i}));
    let config = (
        word(&["registry.fly.io/web:v1", "registry.fly.io/web:v2", ""]),
        or_anything(metadata),
        prop::collection::vec(check.clone(), 0..3),
        or_anything(Just(json!([{"volume": "vol_1", "name": "data", "path": "/data"}]))),
    )
        .prop_map(|(image, metadata, checks, mounts)| {
            json!({"image": image, "metadata": metadata, "services": [{"internal_port": 8080, "checks": checks}], "mounts": mounts})
        });
    let event = (
        word(&["exit", "update", "launch", "start"]),
        any::<i64>(),
        or_anything(
            (any::<i32>(), any::<bool>())
                .prop_map(|(c, r)| json!({"exit_event": {"exit_code": c, "requested_stop": r}})),
        ),
    )
        .prop_map(|(t, ts, req)| json!({"type": t, "timestamp": ts, "request": req}));
    let status = (word(&["http", "alive", "bg_deployments_compat_x"]), word(&["passing", "critical", "warning"]))
        .prop_map(|(n, s)| json!({"name": n, "status": s, "output": "x"}));
    (
        "[0-9a-f]{14}",
        word(&["started", "stopped", "starting", "failed", "destroyed", "suspended", "replacing", "unknown-new-state"]),
        prop::option::of(or_anything(config)),
        prop::collection::vec(event, 0..4),
        prop::collection::vec(status, 0..3),
        word(&["ok", "unknown", "unreachable"]),
    )
        .prop_map(|(id, state, config, events, checks, host)| {
            let mut m = json!({"id": id, "state": state, "events": events, "checks": checks, "host_status": host});
            if let Some(c) = config {
                m["config"] = c;
            }
            m
        })
}

/// Bytes of a provider answer: JSON shaped like one, raw bytes, or JSON cut short.
pub fn answer() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        3 => fly_machine().prop_map(|v| v.to_string().into_bytes()),
        2 => prop::collection::vec(fly_machine(), 0..4).prop_map(|v| Value::Array(v).to_string().into_bytes()),
        3 => json_value().prop_map(|v| v.to_string().into_bytes()),
        1 => prop::collection::vec(any::<u8>(), 0..64),
        1 => (json_value(), any::<prop::sample::Index>()).prop_map(|(v, at)| {
            let s = v.to_string().into_bytes();
            let cut = if s.is_empty() { 0 } else { at.index(s.len()) };
            s[..cut].to_vec()
        }),
    ]
}

/// fly.toml as a person might write it, right or wrong.
pub fn fly_toml() -> impl Strategy<Value = String> {
    let line = prop_oneof![
        Just("app = \"web\"".to_string()),
        Just("[env]".to_string()),
        Just("[http_service]".to_string()),
        Just("internal_port = 8080".to_string()),
        Just("[[http_service.checks]]".to_string()),
        Just("[[services]]".to_string()),
        Just("[[services.http_checks]]".to_string()),
        Just("[checks.alive]".to_string()),
        Just("[[vm]]".to_string()),
        Just("[[mounts]]".to_string()),
        Just("source = \"data\"".to_string()),
        Just("destination = \"/data\"".to_string()),
        Just("[[files]]".to_string()),
        Just("[processes]".to_string()),
        Just("[deploy]".to_string()),
        "(size|memory|path|interval|strategy|processes|local_path|guest_path|kill_timeout|auto_stop_machines) = (\"[a-z0-9/.-]{0,12}\"|[0-9]{1,4}|true|\\[\"app\"\\])",
        ".{0,20}",
    ];
    prop::collection::vec(line, 0..14).prop_map(|lines| lines.join("\n"))
}

/// Inputs as (index into the input table, value).
pub fn inputs() -> impl Strategy<Value = Vec<(usize, String)>> {
    prop::collection::vec((0usize..64, text()), 0..12)
}
