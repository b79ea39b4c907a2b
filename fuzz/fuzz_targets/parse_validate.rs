//! Arbitrary UTF-8 through parsing, validation and analysis: nothing may panic, and
//! every accepted spec must survive the JSON round trip it is distributed with.

#![no_main]

use libfuzzer_sys::fuzz_target;
use mesh_model::{ParseOptions, Resource, Spec, analyze, parse_document_set};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let set = parse_document_set("fuzz.yaml", text, &ParseOptions::default());
    for r in &set.accepted {
        let json = r.spec.to_json();
        let back = Spec::from_json(r.kind(), &json);
        assert_eq!(
            back.as_ref(),
            Ok(&r.spec),
            "round trip of {}",
            String::from_utf8_lossy(&json)
        );
    }
    let refs: Vec<&Resource> = set.accepted.iter().collect();
    let _ = analyze(&refs);
});
