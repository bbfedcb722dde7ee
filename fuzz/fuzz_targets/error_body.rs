//! Any error body a registry answers: reading it never panics, and what is kept for messages is
//! short and printable (it ends up in status fields and logs).
#![no_main]

use libfuzzer_sys::fuzz_target;
use privateer_registry::error_envelope;

fuzz_target!(|data: &[u8]| {
    if let Some((code, message, detail)) = error_envelope(data) {
        assert!(code.chars().count() <= 64);
        assert!(message.chars().count() <= 300);
        for text in [Some(&code), Some(&message), detail.as_ref()]
            .into_iter()
            .flatten()
        {
            assert!(!text.chars().any(char::is_control), "{text:?}");
        }
        assert!(detail.is_none_or(|d| d.chars().count() <= 300));
    }
});
