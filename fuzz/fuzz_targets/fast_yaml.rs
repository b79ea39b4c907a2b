//! Differential fuzzing of the fast block-YAML reader against the full YAML parser:
//! whatever the fast reader accepts, it must read exactly as the full parser does.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    for (_, doc) in mesh_model::parse::split_documents(text) {
        mesh_model::parse::fuzzing::check_fast_reader(doc);
    }
});
