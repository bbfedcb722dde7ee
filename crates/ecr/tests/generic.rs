//! The generic OCI provider against a real `docker-registry` behind htpasswd.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use base64::Engine;
use privateer_api::config::{Config, TargetKind};
use privateer_e2e::TestEnv;
use privateer_e2e::images::{Format, Image, Pusher, layer};
use privateer_e2e::registry::oci_client;
use privateer_ecr::{
    Answer, DockerConfig, ImageId, Provider, RepositoryState, TargetError, TargetProvider,
};

fn docker_config(host: &str, user: &str, password: &str) -> DockerConfig {
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    DockerConfig::parse(format!(r#"{{"auths": {{"{host}": {{"auth": "{auth}"}}}}}}"#).as_bytes())
        .unwrap()
}

#[tokio::test]
async fn generic_registries_answer_existence_by_head_and_nothing_else() {
    let Some(env) = TestEnv::builder()
        .registries()
        .source_credentials("pusher", "s3cret")
        .start_or_skip("generic provider")
        .await
        .unwrap()
    else {
        return;
    };
    let registry = env.source.as_ref().unwrap();
    let image = Image::new(Format::Oci, "linux/arm64", vec![layer(9, 1024)]);
    let digest = Pusher::new(oci_client(), registry.auth())
        .push_image(
            &registry.host,
            "mirror/docker.io/library/nginx",
            "1.27",
            &image,
        )
        .await
        .unwrap();

    let mut config = Config::default();
    config.target.kind = TargetKind::Generic;
    config.target.registry = registry.host.clone();
    config.target.insecure = true;
    let provider = Provider::from_config(
        &config,
        Some(docker_config(&registry.host, "pusher", "s3cret")),
    )
    .await
    .unwrap();
    let repo = "mirror/docker.io/library/nginx";

    let ensured = provider.ensure_repository(repo).await.unwrap();
    assert_eq!(ensured.state, RepositoryState::CreatedOnPush);
    let access = provider.access().await.unwrap();
    assert_eq!(access.endpoint, format!("http://{}", registry.host));
    assert_eq!(access.credentials.unwrap().username, "pusher");

    let tag = ImageId::Tag("1.27".into());
    assert_eq!(
        provider.manifest_digest(repo, &tag).await.unwrap(),
        Some(digest.clone())
    );
    let by_digest = ImageId::Digest(digest.clone());
    assert_eq!(
        provider.manifest_digest(repo, &by_digest).await.unwrap(),
        Some(digest.clone())
    );
    assert_eq!(
        provider
            .manifest_digest(repo, &ImageId::Tag("1.28".into()))
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        provider.manifest_digest("mirror/none", &tag).await.unwrap(),
        None
    );
    assert_eq!(provider.repository_facts(repo).await, Answer::NotApplicable);
    assert_eq!(
        provider.findings(repo, &digest).await,
        Answer::NotApplicable
    );

    // A wrong password is an access problem, named as such.
    let wrong = Provider::from_config(
        &config,
        Some(docker_config(&registry.host, "pusher", "nope")),
    )
    .await
    .unwrap();
    let error = wrong.manifest_digest(repo, &tag).await.unwrap_err();
    assert!(matches!(error, TargetError::AccessDenied { .. }), "{error}");
    assert!(!error.is_transient());
}

#[tokio::test]
async fn an_ecr_target_needs_an_ecr_host() {
    let mut config = Config::default();
    config.target.registry = "registry.example.com".into();
    let error = Provider::from_config(&config, None).await.err().unwrap();
    assert_eq!(
        error.to_string(),
        r#"target configuration: target.registry: "registry.example.com" is not an ECR registry host (unknown DNS suffix); expected <account>.dkr.ecr.<region>.amazonaws.com"#
    );
}
