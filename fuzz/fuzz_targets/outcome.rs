//! Any termination message: reading never panics, and what is read is written back within
//! the kubelet's 4096 bytes, parseable again.
#![no_main]

use libfuzzer_sys::fuzz_target;
use privateer_registry::{CopyOutcome, TERMINATION_MESSAGE_MAX_BYTES};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Some(outcome) = CopyOutcome::parse(text) else {
        return;
    };
    let message = outcome.to_message();
    assert!(
        message.len() <= TERMINATION_MESSAGE_MAX_BYTES,
        "{}",
        message.len()
    );
    let again = CopyOutcome::parse(&message).expect("a written outcome parses");
    assert_eq!(again.succeeded(), outcome.succeeded());
});
