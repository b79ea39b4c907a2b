//! Arbitrary bytes as a Mixer `ReportRequest` (compressed attribute bags, delta
//! encoded or not) through mixer-core's decoder: no panic, and every bag that
//! decodes survives `encode` and `decode` unchanged.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mesh_api::mixer::v1::ReportRequest;
use mixer_core::{
    dictionary::GLOBAL_WORDS,
    manifest::Manifest,
    wire::{decode, decode_report, encode},
};
use prost::Message;

fuzz_target!(|data: &[u8]| {
    let Ok(req) = ReportRequest::decode(data) else {
        return;
    };
    let types = Manifest::standard();
    let Ok(bags) = decode_report(&req, &types) else {
        return;
    };
    let all = u32::try_from(GLOBAL_WORDS.len()).unwrap_or(u32::MAX);
    for bag in bags {
        let wire = encode(&bag, all);
        let again = decode(&wire, all, &[], &types).expect("an encoded bag decodes");
        // Compared as encoded bytes, so a NaN double equals itself.
        assert_eq!(encode(&again, all).encode_to_vec(), wire.encode_to_vec());
    }
});
