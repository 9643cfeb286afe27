//! The config file format is a public API: its JSON Schema is derived from the raw types and
//! committed under `schema/`. This test fails when the types drift from the committed schema;
//! run it with `UPDATE_SCHEMA=1` to regenerate after an intended change.

use std::path::PathBuf;

fn check(file: &str, schema: serde_json::Value) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../schema")
        .join(file);
    let text = serde_json::to_string_pretty(&schema).unwrap() + "\n";
    if std::env::var_os("UPDATE_SCHEMA").is_some() {
        std::fs::write(&path, &text).unwrap();
        return;
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == text,
        "{} drifted from the config types; if the change is intended, run \
         `UPDATE_SCHEMA=1 cargo test -p shakedown-model --test schema` and commit the result",
        path.display()
    );
}

#[test]
fn proxy_config_schema_is_committed() {
    check(
        "proxy-config.schema.json",
        shakedown_model::proxy_config_schema(),
    );
}

#[test]
fn fault_schema_is_committed() {
    check("fault.schema.json", shakedown_model::fault_schema());
}

#[test]
fn load_schema_is_committed() {
    check("load.schema.json", shakedown_model::load_schema());
}

#[test]
fn experiment_schema_is_committed() {
    check(
        "experiment.schema.json",
        shakedown_model::experiment_schema(),
    );
}

#[test]
fn slo_schema_is_committed() {
    check("slo.schema.json", shakedown_model::slo_schema());
}

#[test]
fn the_schema_describes_the_seed_000_example() {
    let schema = shakedown_model::proxy_config_schema();
    let defs = schema["$defs"].as_object().unwrap();
    assert!(defs.contains_key("RawEnvoyFault") && defs.contains_key("RawIstioFault"));
    assert_eq!(
        schema["additionalProperties"], false,
        "unknown fields are rejected"
    );
}
