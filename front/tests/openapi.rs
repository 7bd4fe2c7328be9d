//! docs/openapi.yaml is the HTTP contract; the binary serves a JSON copy of
//! it (`front/web/openapi.json`, `GET /api/v1/openapi.json`). These tests keep
//! the copy equal to the YAML and the description equal to the route table.
//!
//! After editing the YAML: `SECKILL_BLESS=1 cargo test -p seckill-front --test openapi`
//! writes the JSON copy anew.

use serde_json::Value;
use std::collections::BTreeSet;
use std::path::PathBuf;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn yaml() -> Value {
    let path = root().join("docs/openapi.yaml");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_norway::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn the_served_json_is_the_yaml() {
    let from_yaml = yaml();
    let json_path = root().join("front/web/openapi.json");
    if std::env::var("SECKILL_BLESS").is_ok_and(|v| v == "1") {
        let mut text = serde_json::to_string_pretty(&from_yaml).expect("JSON");
        text.push('\n');
        std::fs::write(&json_path, text).expect("writing front/web/openapi.json");
    }
    let served: Value = serde_json::from_str(seckill_front::pages::OPENAPI_JSON).expect("embedded JSON");
    assert!(
        served == from_yaml,
        "front/web/openapi.json differs from docs/openapi.yaml: run \
         `SECKILL_BLESS=1 cargo test -p seckill-front --test openapi` and commit both"
    );
}

/// `/api/v1/activities/{activity_id}/buy` → `/api/v1/activities/1/buy`.
fn concrete(path: &str) -> String {
    path.split('/').map(|s| if s.starts_with('{') { "1" } else { s }).collect::<Vec<_>>().join("/")
}

#[test]
fn every_route_is_described_with_its_method_and_nothing_else_is() {
    let spec = yaml();
    let paths = spec["paths"].as_object().expect("paths");
    let mut described = BTreeSet::new();
    for (path, ops) in paths {
        for method in ops.as_object().expect("operations").keys() {
            described.insert((path.clone(), method.to_uppercase()));
            if path.starts_with("/api/v1/") {
                assert_eq!(
                    seckill_front::http::route_methods(&concrete(path)),
                    Some(method.to_uppercase().as_str()),
                    "{method} {path} is described but the front does not route it"
                );
            }
        }
    }
    // Every API route the front knows (its 405 table) is described.
    let routes = [
        "/api/v1/healthz",
        "/api/v1/readyz",
        "/api/v1/info",
        "/api/v1/openapi.json",
        "/api/v1/activities",
        "/api/v1/activities/{activity_id}",
        "/api/v1/activities/{activity_id}/token",
        "/api/v1/activities/{activity_id}/buy",
        "/api/v1/orders",
        "/api/v1/orders/{order_id}",
        "/api/v1/orders/{order_id}/cancel",
        "/api/v1/orders/{order_id}/refund",
        "/api/v1/orders/{order_id}/pay",
        "/api/v1/payments/notify",
        "/api/v1/demo/token",
    ];
    for r in routes {
        let m = seckill_front::http::route_methods(&concrete(r)).unwrap_or_else(|| panic!("{r} is not routed"));
        assert!(described.contains(&(r.to_string(), m.to_string())), "{m} {r} is routed but not described");
    }
    let api_ops = described.iter().filter(|(p, _)| p.starts_with("/api/v1")).count();
    assert_eq!(api_ops, routes.len(), "described API operations: {described:?}");
}

#[test]
fn every_error_code_is_in_the_enum() {
    let spec = yaml();
    let codes: BTreeSet<&str> = spec["components"]["schemas"]["ErrorCode"]["enum"]
        .as_array()
        .expect("ErrorCode enum")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    for c in seckill_proto::ErrorCode::ALL {
        assert!(codes.contains(c.as_str()), "{} is missing from ErrorCode", c.as_str());
    }
}
