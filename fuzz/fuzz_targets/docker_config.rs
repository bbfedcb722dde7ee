//! Any docker config.json (a dockerconfigjson Secret's content): never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use privateer_ecr::DockerConfig;

fuzz_target!(|data: &[u8]| {
    if let Ok(config) = DockerConfig::parse(data) {
        for host in [
            "docker.io",
            "registry-1.docker.io",
            "ghcr.io",
            "127.0.0.1:5000",
        ] {
            let _ = config.credentials_for(host);
        }
    }
});
