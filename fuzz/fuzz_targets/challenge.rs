//! Any `WWW-Authenticate` value: parsing never panics; a Bearer challenge always has a realm.
#![no_main]

use libfuzzer_sys::fuzz_target;
use privateer_registry::auth::{Challenge, parse_challenge};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(Challenge::Bearer { realm, .. }) = parse_challenge(text) {
        let _ = realm.len();
    }
});
