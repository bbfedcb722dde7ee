//! Any token endpoint answer: never a panic, and a token accepted is a valid header value.
#![no_main]

use libfuzzer_sys::fuzz_target;
use privateer_registry::auth::parse_token;

fuzz_target!(|data: &[u8]| {
    if let Ok(value) = parse_token(data) {
        let text = value.to_str().expect("an accepted token is visible ASCII");
        assert!(text.starts_with("Bearer "));
        assert!(!text.contains('\r') && !text.contains('\n'));
    }
});
