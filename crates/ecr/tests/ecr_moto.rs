//! The ECR provider against `moto_server`, through a counting proxy that can inject ECR's
//! throttling, server and access-denied errors. The target registry of the test environment
//! (htpasswd user `AWS`, moto's token as password) stands in for the ECR data plane.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::time::Duration;

use aws_sdk_ecr::types::{ImageIdentifier, ImageScanningConfiguration, ImageTagMutability, Tag};
use privateer_api::config::{EncryptionType, TagMutability, TargetConfig};
use privateer_e2e::TestEnv;
use privateer_e2e::ecr_proxy::{EcrProxy, Fault};
use privateer_e2e::images::{Format, Image, Pusher, layer};
use privateer_e2e::moto::{self, ACCOUNT, REGION};
use privateer_e2e::registry::oci_client;
use privateer_ecr::{
    Answer, EcrOptions, EcrProvider, Findings, ImageId, RepositoryFacts, RepositoryState,
    TargetError, TargetProvider,
};

const POLICY: &str = r#"{"Version": "2012-10-17", "Statement": [{"Sid": "ClusterPull",
  "Effect": "Allow", "Principal": {"AWS": "arn:aws:iam::123456789012:root"},
  "Action": ["ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer"]}]}"#;
const LIFECYCLE: &str = r#"{"rules": [{"rulePriority": 1, "description": "expire untagged",
  "selection": {"tagStatus": "untagged", "countType": "sinceImagePushed", "countUnit": "days",
  "countNumber": 14}, "action": {"type": "expire"}}]}"#;
const KMS_KEY: &str = "arn:aws:kms:eu-west-1:123456789012:key/0b9a6e4c-privateer";
/// ECR calls that change something.
const WRITES: &[&str] = &[
    "CreateRepository",
    "DeleteRepository",
    "SetRepositoryPolicy",
    "PutLifecyclePolicy",
    "PutImageScanningConfiguration",
    "PutImageTagMutability",
    "TagResource",
];

struct Fixture {
    env: TestEnv,
    proxy: EcrProxy,
}

async fn fixture(test: &str) -> Option<Fixture> {
    let env = TestEnv::builder()
        .registries()
        .moto()
        .start_or_skip(test)
        .await
        .unwrap()?;
    let proxy = EcrProxy::start(&env.moto.as_ref().unwrap().endpoint)
        .await
        .unwrap();
    Some(Fixture { env, proxy })
}

impl Fixture {
    fn target(&self) -> TargetConfig {
        let mut target = TargetConfig {
            registry: format!("{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com"),
            ..TargetConfig::default()
        };
        target.ecr.endpoint_url = self.proxy.endpoint.clone();
        target.ecr.registry_endpoint = format!("http://{}", self.env.target.as_ref().unwrap().host);
        target
    }

    async fn provider(&self, target: &TargetConfig) -> EcrProvider {
        let options = EcrOptions {
            initial_backoff: Duration::from_millis(10),
            token_min_age: Duration::from_millis(300),
            cache_ttl: Duration::from_secs(60),
            negative_cache_ttl: Duration::from_millis(300),
            credentials: Some(aws_sdk_ecr::config::SharedCredentialsProvider::new(
                moto::credentials(),
            )),
            ..EcrOptions::default()
        };
        EcrProvider::connect(target, options).await.unwrap()
    }

    /// A client that bypasses the proxy: the "someone else" who changes repositories.
    async fn moto(&self) -> aws_sdk_ecr::Client {
        self.env.moto.as_ref().unwrap().ecr_client().await
    }

    /// The repository as moto holds it, or the error of asking.
    async fn repository(
        &self,
        name: &str,
    ) -> Result<aws_sdk_ecr::types::Repository, impl std::fmt::Debug> {
        self.moto()
            .await
            .describe_repositories()
            .repository_names(name)
            .send()
            .await
            .map(|out| out.repositories()[0].clone())
    }

    fn writes(&self) -> u32 {
        WRITES.iter().map(|action| self.proxy.calls(action)).sum()
    }
}

/// Put an image into moto's ECR (its API, not the data plane); returns its digest.
async fn put_image(moto: &aws_sdk_ecr::Client, repo: &str, tag: &str, seed: u64) -> String {
    let image = Image::new(Format::Oci, "linux/amd64", vec![layer(seed, 512)]);
    let manifest = String::from_utf8(image.manifest.data.to_vec()).unwrap();
    let put = moto
        .put_image()
        .repository_name(repo)
        .image_manifest(&manifest)
        .image_tag(tag)
        .send()
        .await
        .unwrap();
    put.image()
        .unwrap()
        .image_id()
        .unwrap()
        .image_digest()
        .unwrap()
        .to_owned()
}

async fn start_scan(moto: &aws_sdk_ecr::Client, repo: &str, digest: &str) {
    moto.start_image_scan()
        .repository_name(repo)
        .image_id(ImageIdentifier::builder().image_digest(digest).build())
        .send()
        .await
        .unwrap();
}

macro_rules! fixture {
    ($name:expr) => {
        match fixture($name).await {
            Some(f) => f,
            None => return,
        }
    };
}

fn same_json(a: &str, b: &str) -> bool {
    serde_json::from_str::<serde_json::Value>(a).unwrap()
        == serde_json::from_str::<serde_json::Value>(b).unwrap()
}

#[tokio::test]
async fn every_setting_lands_on_the_created_repository_and_a_second_ensure_changes_nothing() {
    let f = fixture!("ecr settings");
    let mut target = f.target();
    target.ecr.tag_mutability = TagMutability::Immutable;
    target.ecr.scan_on_push = true;
    target.ecr.encryption.kind = EncryptionType::Kms;
    target.ecr.encryption.kms_key = KMS_KEY.into();
    target.ecr.repository_policy = POLICY.into();
    target.ecr.lifecycle_policy = LIFECYCLE.into();
    target.ecr.tags = [("team", "platform"), ("cost-center", "42")]
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .into();
    let ecr = f.provider(&target).await;
    let repo = "mirror/docker.io/library/nginx";

    let ensured = ecr.ensure_repository(repo).await.unwrap();
    assert_eq!(ensured.state, RepositoryState::Created);

    let moto = f.moto().await;
    let created = f.repository(repo).await.unwrap();
    assert_eq!(created.registry_id(), Some(ACCOUNT));
    assert_eq!(
        created.image_tag_mutability(),
        Some(&ImageTagMutability::Immutable)
    );
    assert!(
        created
            .image_scanning_configuration()
            .unwrap()
            .scan_on_push()
    );
    let encryption = created.encryption_configuration().unwrap();
    assert_eq!(encryption.encryption_type().as_str(), "KMS");
    assert_eq!(encryption.kms_key(), Some(KMS_KEY));
    let policy = moto
        .get_repository_policy()
        .repository_name(repo)
        .send()
        .await
        .unwrap();
    assert!(same_json(policy.policy_text().unwrap(), POLICY));
    let lifecycle = moto
        .get_lifecycle_policy()
        .repository_name(repo)
        .send()
        .await
        .unwrap();
    assert!(same_json(
        lifecycle.lifecycle_policy_text().unwrap(),
        LIFECYCLE
    ));
    let tags = moto
        .list_tags_for_resource()
        .resource_arn(created.repository_arn().unwrap())
        .send()
        .await
        .unwrap();
    let mut tags: Vec<(&str, &str)> = tags.tags().iter().map(|t| (t.key(), t.value())).collect();
    tags.sort();
    assert_eq!(tags, [("cost-center", "42"), ("team", "platform")]);

    f.proxy.reset_calls();
    let again = ecr.ensure_repository(repo).await.unwrap();
    assert_eq!(again.state, RepositoryState::Existed);
    assert_eq!(again.drift, vec![]);
    assert_eq!(f.writes(), 0, "{:?}", f.proxy.all_calls());
}

#[tokio::test]
async fn drift_is_reported_and_only_applied_when_enforced() {
    let f = fixture!("ecr drift");
    let mut target = f.target();
    target.ecr.tags = [("team".to_owned(), "platform".to_owned())].into();
    let repo = "mirror/quay.io/prometheus/node-exporter";
    // Someone else created the repository, loosely.
    let moto = f.moto().await;
    moto.create_repository()
        .repository_name(repo)
        .image_tag_mutability(ImageTagMutability::Mutable)
        .tags(
            Tag::builder()
                .key("team")
                .value("someone-else")
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    let ecr = f.provider(&target).await;

    f.proxy.reset_calls();
    let reported = ecr.ensure_repository(repo).await.unwrap();
    let drift: Vec<String> = reported.drift.iter().map(ToString::to_string).collect();
    assert_eq!(
        drift,
        [
            "scanOnPush: want true, have false",
            "tagMutability: want IMMUTABLE, have MUTABLE",
            "tags.team: want platform, have someone-else",
        ]
    );
    assert_eq!(f.writes(), 0, "drift must not be rewritten silently");
    let facts = ecr.repository_facts(repo).await;
    assert!(
        matches!(
            facts,
            Answer::Known(RepositoryFacts::Present {
                tag_immutable: false,
                scan_on_push: false,
                ..
            })
        ),
        "{facts:?}"
    );

    target.ecr.enforce_settings = true;
    let enforcing = f.provider(&target).await;
    let fixed = enforcing.ensure_repository(repo).await.unwrap();
    assert_eq!(fixed.corrected.len(), 3);
    assert_eq!(fixed.drift, vec![]);
    let after = enforcing.ensure_repository(repo).await.unwrap();
    assert_eq!((after.drift.len(), after.corrected.len()), (0, 0));
    assert_eq!(
        f.repository(repo).await.unwrap().image_tag_mutability(),
        Some(&ImageTagMutability::Immutable)
    );
}

#[tokio::test]
async fn a_refused_policy_leaves_no_half_created_repository() {
    let f = fixture!("ecr refused policy");
    let mut target = f.target();
    target.ecr.repository_policy =
        r#"{"Version": "2012-10-17", "Statement": [{"Effect": "Maybe"}]}"#.into();
    let ecr = f.provider(&target).await;
    let repo = "mirror/ghcr.io/org/app";
    let error = ecr.ensure_repository(repo).await.unwrap_err();
    assert!(
        matches!(&error, TargetError::Rejected { action, code, .. } if action == "ecr:SetRepositoryPolicy" && code == "InvalidParameterException"),
        "{error}"
    );
    assert!(!error.is_transient());
    let listed = f.repository(repo).await;
    assert!(listed.is_err(), "the repository must be gone: {listed:?}");
}

#[tokio::test]
async fn tokens_are_cached_accepted_by_the_registry_and_never_refreshed_in_a_loop() {
    let f = fixture!("ecr tokens");
    let ecr = f.provider(&f.target()).await;

    let first = ecr.access().await.unwrap();
    for _ in 0..50 {
        assert_eq!(ecr.access().await.unwrap(), first);
    }
    assert_eq!(f.proxy.calls("GetAuthorizationToken"), 1);
    let target_host = &f.env.target.as_ref().unwrap().host;
    assert_eq!(first.endpoint, format!("http://{target_host}"));

    // The (already expired) token opens the data plane.
    let credentials = first.credentials.clone().unwrap();
    assert_eq!(credentials.username, "AWS");
    let pusher = Pusher::new(
        oci_client(),
        oci_client::secrets::RegistryAuth::Basic(credentials.username, credentials.password),
    );
    let image = Image::new(Format::Oci, "linux/amd64", vec![layer(7, 2048)]);
    pusher
        .push_image(
            first.host(),
            "mirror/docker.io/library/busybox",
            "1.37",
            &image,
        )
        .await
        .unwrap();

    // Refused right after it was fetched: reused (a fresh one would be refused too).
    for _ in 0..20 {
        ecr.access_rejected(&first);
        assert_eq!(ecr.access().await.unwrap().generation, first.generation);
    }
    assert_eq!(f.proxy.calls("GetAuthorizationToken"), 1);

    // Refused once it is old enough: replaced on the next request, once.
    tokio::time::sleep(Duration::from_millis(350)).await;
    ecr.access_rejected(&first);
    let second = ecr.access().await.unwrap();
    assert_ne!(second.generation, first.generation);
    ecr.access_rejected(&first); // a late report about the old token changes nothing
    for _ in 0..20 {
        assert_eq!(ecr.access().await.unwrap().generation, second.generation);
    }
    assert_eq!(f.proxy.calls("GetAuthorizationToken"), 2);

    // Without an override the endpoint is ECR's proxyEndpoint.
    let mut target = f.target();
    target.ecr.registry_endpoint.clear();
    let direct = f.provider(&target).await.access().await.unwrap();
    assert_eq!(
        direct.endpoint,
        format!("https://{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com")
    );
}

#[tokio::test]
async fn throttling_and_server_errors_are_retried_access_denied_is_not() {
    let f = fixture!("ecr retries");
    let ecr = f.provider(&f.target()).await;

    f.proxy.fail("DescribeRepositories", Fault::Throttle, 3);
    let ensured = ecr.ensure_repository("mirror/a").await.unwrap();
    assert_eq!(ensured.state, RepositoryState::Created);
    assert_eq!(f.proxy.calls("DescribeRepositories"), 4);

    f.proxy.fail("GetAuthorizationToken", Fault::ServerError, 2);
    ecr.access().await.unwrap();
    assert_eq!(f.proxy.calls("GetAuthorizationToken"), 3);

    f.proxy.reset_calls();
    f.proxy.fail("DescribeRepositories", Fault::Throttle, 100);
    let error = ecr.ensure_repository("mirror/b").await.unwrap_err();
    assert!(error.is_transient(), "{error}");
    assert!(error.to_string().contains("ThrottlingException"), "{error}");
    assert_eq!(f.proxy.calls("DescribeRepositories"), 5, "max attempts");

    f.proxy.fail("DescribeRepositories", Fault::Throttle, 0);
    f.proxy.reset_calls();
    f.proxy.fail("CreateRepository", Fault::AccessDenied, 1);
    let error = ecr.ensure_repository("mirror/c").await.unwrap_err();
    assert!(
        matches!(&error, TargetError::AccessDenied { action, resource, .. } if action == "ecr:CreateRepository" && resource == "mirror/c"),
        "{error}"
    );
    assert!(
        error.to_string().contains("grant ecr:CreateRepository"),
        "{error}"
    );
    assert_eq!(
        f.proxy.calls("CreateRepository"),
        1,
        "access denied is not retried"
    );
}

#[tokio::test]
async fn compliance_answers_are_cached_negatives_briefly_failures_not_at_all() {
    let f = fixture!("ecr compliance");
    let ecr = f.provider(&f.target()).await;
    let moto = f.moto().await;
    let repo = "mirror/registry.k8s.io/pause";

    assert_eq!(
        ecr.repository_facts(repo).await,
        Answer::Known(RepositoryFacts::Missing)
    );
    moto.create_repository()
        .repository_name(repo)
        .image_tag_mutability(ImageTagMutability::Immutable)
        .image_scanning_configuration(
            ImageScanningConfiguration::builder()
                .scan_on_push(true)
                .build(),
        )
        .send()
        .await
        .unwrap();
    // Still the cached "missing" …
    assert_eq!(
        ecr.repository_facts(repo).await,
        Answer::Known(RepositoryFacts::Missing)
    );
    assert_eq!(f.proxy.calls("DescribeRepositories"), 1);
    // … but only briefly.
    tokio::time::sleep(Duration::from_millis(400)).await;
    let present = Answer::Known(RepositoryFacts::Present {
        tag_immutable: true,
        tag_mutability: "IMMUTABLE".into(),
        scan_on_push: true,
    });
    assert_eq!(ecr.repository_facts(repo).await, present);
    // A positive answer is served from the cache: many lookups, no more calls.
    for _ in 0..100 {
        assert_eq!(ecr.repository_facts(repo).await, present);
    }
    assert_eq!(f.proxy.calls("DescribeRepositories"), 2);
    assert_eq!(f.proxy.calls("GetRegistryScanningConfiguration"), 1);

    // A failure to ask is "unknown" and is not remembered.
    let other = "mirror/docker.io/library/redis";
    f.proxy.fail("DescribeRepositories", Fault::AccessDenied, 1);
    let unknown = ecr.repository_facts(other).await;
    assert!(
        matches!(&unknown, Answer::Unknown(why) if why.contains("ecr:DescribeRepositories")),
        "{unknown:?}"
    );
    assert_eq!(
        ecr.repository_facts(other).await,
        Answer::Known(RepositoryFacts::Missing)
    );
}

#[tokio::test]
async fn registry_scanning_rules_decide_scan_on_push_under_enhanced_scanning() {
    let f = fixture!("ecr registry scanning");
    let moto = f.moto().await;
    for (repo, scan) in [("mirror/docker.io/x", false), ("other/y", true)] {
        moto.create_repository()
            .repository_name(repo)
            .image_scanning_configuration(
                ImageScanningConfiguration::builder()
                    .scan_on_push(scan)
                    .build(),
            )
            .send()
            .await
            .unwrap();
    }
    use aws_sdk_ecr::types::{
        RegistryScanningRule, ScanFrequency, ScanType, ScanningRepositoryFilter,
        ScanningRepositoryFilterType,
    };
    moto.put_registry_scanning_configuration()
        .scan_type(ScanType::Enhanced)
        .rules(
            RegistryScanningRule::builder()
                .scan_frequency(ScanFrequency::ScanOnPush)
                .repository_filters(
                    ScanningRepositoryFilter::builder()
                        .filter("mirror/*")
                        .filter_type(ScanningRepositoryFilterType::Wildcard)
                        .build()
                        .unwrap(),
                )
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    let ecr = f.provider(&f.target()).await;
    let scans = |facts| match facts {
        Answer::Known(RepositoryFacts::Present { scan_on_push, .. }) => scan_on_push,
        other => panic!("{other:?}"),
    };
    assert!(scans(ecr.repository_facts("mirror/docker.io/x").await));
    assert!(!scans(ecr.repository_facts("other/y").await));
}

#[tokio::test]
async fn image_existence_and_findings() {
    let f = fixture!("ecr images");
    let ecr = f.provider(&f.target()).await;
    let moto = f.moto().await;
    let repo = "mirror/docker.io/library/alpine";
    ecr.ensure_repository(repo).await.unwrap();
    let digest = put_image(&moto, repo, "3.20", 3).await;

    let tag = ImageId::Tag("3.20".into());
    assert_eq!(
        ecr.manifest_digest(repo, &tag).await.unwrap(),
        Some(digest.clone())
    );
    let by_digest = ImageId::Digest(digest.clone());
    assert_eq!(
        ecr.manifest_digest(repo, &by_digest).await.unwrap(),
        Some(digest.clone())
    );
    assert_eq!(
        ecr.manifest_digest(repo, &ImageId::Tag("nope".into()))
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        ecr.manifest_digest("mirror/none", &tag).await.unwrap(),
        None
    );

    // Never scanned yet, then scanned with moto's default (HIGH only) findings.
    assert_eq!(
        ecr.findings(repo, &digest).await,
        Answer::Known(Findings::NotScanned)
    );
    start_scan(&moto, repo, &digest).await;
    tokio::time::sleep(Duration::from_millis(350)).await; // "not scanned" is a negative answer
    assert_eq!(
        ecr.findings(repo, &digest).await,
        Answer::Known(Findings::Scanned { critical: 0 })
    );
    assert_eq!(
        ecr.findings("mirror/none", &digest).await,
        Answer::Known(Findings::NoImage)
    );
    // An image with CRITICAL findings (moto's API for custom scan results).
    let old = put_image(&moto, repo, "old", 4).await;
    start_scan(&moto, repo, &old).await;
    f.env
        .moto
        .as_ref()
        .unwrap()
        .set_scan_findings(serde_json::json!([{
            "registryId": ACCOUNT,
            "repositoryName": repo,
            "imageId": {"imageDigest": old},
            "imageScanStatus": {"status": "COMPLETE", "description": "done"},
            "imageScanFindings": {"findings": [], "findingSeverityCounts": {"CRITICAL": 3, "HIGH": 1}},
        }]))
        .await
        .unwrap();
    assert_eq!(
        ecr.findings(repo, &old).await,
        Answer::Known(Findings::Scanned { critical: 3 })
    );

    // Lifecycle rules delete images: existence is asked again every time.
    moto.batch_delete_image()
        .repository_name(repo)
        .image_ids(ImageIdentifier::builder().image_tag("3.20").build())
        .send()
        .await
        .unwrap();
    assert_eq!(ecr.manifest_digest(repo, &tag).await.unwrap(), None);

    // deletionPolicy: Delete removes the image by digest, tags and all; twice is harmless.
    assert!(ecr.delete_image(repo, &old).await.unwrap());
    assert_eq!(
        ecr.manifest_digest(repo, &ImageId::Tag("old".into()))
            .await
            .unwrap(),
        None
    );
    assert!(!ecr.delete_image(repo, &old).await.unwrap());
    assert!(!ecr.delete_image("mirror/none", &old).await.unwrap());
}
