//! Any input: parsing never panics, and what parses normalizes, names and targets validly.
#![no_main]

use libfuzzer_sys::fuzz_target;
use privateer_image::{
    Reference, TargetNaming, is_dns1123_subdomain, is_ecr_repository_name, object_name,
};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(reference) = Reference::parse(text) else {
        return;
    };
    let canonical = reference.to_string();
    let again = Reference::parse(&canonical).expect("a canonical reference parses");
    assert_eq!(again.to_string(), canonical, "normalize is idempotent");
    assert!(is_dns1123_subdomain(&object_name(&reference)));
    let naming = TargetNaming::new("123456789012.dkr.ecr.eu-west-1.amazonaws.com", "mirror")
        .expect("valid naming");
    let target = naming
        .target(&reference)
        .expect("every reference has a target");
    if !naming.is_in_target(&reference) {
        assert!(is_ecr_repository_name(target.path()), "{target}");
    }
});
