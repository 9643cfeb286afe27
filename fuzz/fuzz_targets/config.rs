//! Any bytes given to the config parsers must produce a config or located errors, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Err(e) = shakedown_model::ProxyConfig::load("fuzz.yaml", text) {
            assert!(!e.diagnostics.is_empty(), "an error must say what is wrong");
        }
        let _ = shakedown_model::parse_fault("fuzz.yaml", text, None);
        if let Err(e) = shakedown_model::LoadSpec::load("fuzz.yaml", text) {
            assert!(!e.diagnostics.is_empty(), "an error must say what is wrong");
        }
        if let Err(e) = shakedown_model::parse_toxic("fuzz.json", text) {
            assert!(!e.diagnostics.is_empty(), "an error must say what is wrong");
        }
    }
});
