//! Any bytes as a pulled manifest: parsing never panics, stays within the limits, and a
//! platform-filtered index parses again to the same children.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use privateer_registry::{Limits, Manifest, Platform, sha256_digest};

fuzz_target!(|data: &[u8]| {
    let limits = Limits {
        index_children: 64,
        layers: 64,
        ..Limits::default()
    };
    let bytes = Bytes::copy_from_slice(data);
    let digest = sha256_digest(&bytes);
    let Ok(manifest) = Manifest::parse(bytes, digest, &limits) else {
        return;
    };
    assert!(manifest.blobs().len() <= 65);
    let _ = manifest.canonical_digest();
    let amd64 = Platform::parse("linux/amd64").expect("a platform");
    if let Some(filtered) = manifest.filtered_index(&[amd64]) {
        let again = Manifest::parse(filtered.bytes.clone(), filtered.digest.clone(), &limits)
            .expect("a filtered index parses");
        assert_eq!(again.platforms(), filtered.platforms());
    }
});
