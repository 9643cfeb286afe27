//! The fuzz target's property on every `cargo test`: whatever the bytes, the parsers answer with
//! a config or with located errors, never a panic. Inputs are deterministic mutations
//! (truncations, byte replacements, line swaps) of realistic configs.

const SEEDS: [&str; 4] = [
    include_str!("../../../fuzz/seeds/seed-000.yaml"),
    include_str!("../../../fuzz/seeds/load.yaml"),
    include_str!("../../../fuzz/seeds/tcp.yaml"),
    r#"{"name": "lat", "type": "latency", "stream": "upstream", "toxicity": 0.5, "attributes": {"latency": 100, "jitter": 10}, "ttl": "30s"}"#,
];

fn check(text: &str) {
    if let Err(e) = shakedown_model::ProxyConfig::load("m.yaml", text) {
        assert!(!e.diagnostics.is_empty());
        for d in &e.diagnostics {
            assert!(!d.message.is_empty());
        }
    }
    let _ = shakedown_model::parse_fault("m.yaml", text, None);
    if let Err(e) = shakedown_model::LoadSpec::load("m.yaml", text) {
        assert!(!e.diagnostics.is_empty());
    }
    if let Err(e) = shakedown_model::parse_toxic("m.json", text) {
        assert!(!e.diagnostics.is_empty());
    }
}

#[test]
fn mutated_inputs_never_panic() {
    for seed in SEEDS {
        mutate(seed);
    }
}

fn mutate(seed: &str) {
    check(seed);
    // Every truncation.
    for cut in (0..seed.len()).filter(|i| seed.is_char_boundary(*i)) {
        check(&seed[..cut]);
    }
    // Byte replacements with characters that matter to YAML and to our fields.
    let specials = [
        ":", "-", "[", "]", "{", "}", "\"", "'", "#", "&", "*", "!", "|", ">", " ", "\n", "\t",
        "0", "9", "1e400", "ü",
    ];
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    for _ in 0..4000 {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let pos = (state as usize) % seed.len();
        if !seed.is_char_boundary(pos) {
            continue;
        }
        let with = specials[(state >> 32) as usize % specials.len()];
        let end = (pos + 1..=seed.len())
            .find(|i| seed.is_char_boundary(*i))
            .unwrap_or(seed.len());
        check(&format!("{}{}{}", &seed[..pos], with, &seed[end..]));
    }
    // Swapped lines break indentation in every way.
    let lines: Vec<&str> = seed.lines().collect();
    for i in 0..lines.len() {
        for j in i + 1..lines.len() {
            let mut l = lines.clone();
            l.swap(i, j);
            check(&l.join("\n"));
        }
    }
}
