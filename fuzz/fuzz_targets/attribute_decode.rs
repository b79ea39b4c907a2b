//! Arbitrary bytes as a Mixer `ReportRequest` (compressed attribute bags, delta
//! encoded or not) through mixer-core's decoders: no panic; reading the bytes in
//! place (`wire::raw`) gives what decoding them with prost first gives; and every
//! bag that decodes survives `encode` and `decode` unchanged.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mesh_api::mixer::v1::ReportRequest;
use mixer_core::{
    dictionary::GLOBAL_WORDS,
    manifest::Manifest,
    wire::{decode, decode_report, encode, raw},
};
use prost::Message;

fuzz_target!(|data: &[u8]| {
    let types = Manifest::standard();
    let all = u32::try_from(GLOBAL_WORDS.len()).unwrap_or(u32::MAX);
    let canonical = |bags: &[mixer_core::wire::AttributeBag]| -> Vec<Vec<u8>> {
        bags.iter().map(|b| encode(b, all).encode_to_vec()).collect()
    };
    let in_place = raw::decode_report(data, &types).ok();
    let Ok(req) = ReportRequest::decode(data) else {
        assert!(in_place.is_none(), "read in place what prost refuses");
        return;
    };
    let Ok(bags) = decode_report(&req, &types) else {
        assert!(in_place.is_none(), "read in place a Report decoding refuses");
        return;
    };
    assert_eq!(in_place.as_deref().map(canonical), Some(canonical(&bags)));
    for bag in bags {
        let wire = encode(&bag, all);
        let again = decode(&wire, all, &[], &types).expect("an encoded bag decodes");
        // Compared as encoded bytes, so a NaN double equals itself.
        assert_eq!(encode(&again, all).encode_to_vec(), wire.encode_to_vec());
    }
});
