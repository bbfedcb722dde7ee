//! `privateer target` against moto, with credentials from the AWS default chain (environment
//! variables, as in a Pod), and its exit statuses.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::process::{Command, Output};

use privateer_e2e::TestEnv;
use privateer_e2e::ecr_proxy::{EcrProxy, Fault};
use privateer_e2e::moto::{ACCESS_KEY, ACCOUNT, REGION, SECRET_KEY};

/// `privateer` with the AWS default credential chain fed by the environment only.
fn privateer(dir: &std::path::Path, args: &[&str]) -> Output {
    privateer_as(
        dir,
        args,
        &[
            ("AWS_ACCESS_KEY_ID", ACCESS_KEY),
            ("AWS_SECRET_ACCESS_KEY", SECRET_KEY),
        ],
    )
}

fn privateer_as(dir: &std::path::Path, args: &[&str], credentials: &[(&str, &str)]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_privateer"))
        .args(args)
        .env_clear()
        .envs(credentials.iter().copied())
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("AWS_CONFIG_FILE", dir.join("no-aws-config"))
        .env(
            "AWS_SHARED_CREDENTIALS_FILE",
            dir.join("no-aws-credentials"),
        )
        .output()
        .unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

// Multi-threaded: the proxy must serve while this thread waits for the subprocess.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn target_ensure_and_check_use_the_default_credential_chain() {
    let Some(env) = TestEnv::builder()
        .registries()
        .moto()
        .start_or_skip("privateer target")
        .await
        .unwrap()
    else {
        return;
    };
    let proxy = EcrProxy::start(&env.moto.as_ref().unwrap().endpoint)
        .await
        .unwrap();
    let config = env.dir.join("config.yaml");
    let data_plane = &env.target.as_ref().unwrap().host;
    std::fs::write(
        &config,
        format!(
            "target:\n  registry: {ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com\n  ecr:\n    endpointUrl: {}\n    registryEndpoint: http://{data_plane}\n    tags: {{team: platform}}\n",
            proxy.endpoint
        ),
    )
    .unwrap();
    let config = config.to_str().unwrap();
    let repo = "mirror/docker.io/library/nginx";

    let out = privateer(&env.dir, &["target", "ensure", "--config", config, repo]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), format!("{repo}: Created\n"));

    let out = privateer(
        &env.dir,
        &["target", "check", "--config", config, repo, "mirror/none"],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        format!(
            "registry: {ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com (ECR account {ACCOUNT}, region {REGION}, partition aws)\n\
             data plane: http://{data_plane} (as AWS)\n\
             {repo}: tagMutability IMMUTABLE, scanOnPush true\n\
             mirror/none: missing\n"
        )
    );

    // IAM refuses: exit 3 and a message naming the action and the repository.
    proxy.fail("DescribeRepositories", Fault::AccessDenied, 1);
    let out = privateer(
        &env.dir,
        &["target", "ensure", "--config", config, "mirror/x"],
    );
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    assert!(
        err.contains("access denied: ecr:DescribeRepositories on mirror/x"),
        "{err}"
    );

    // ECR keeps failing: exit 4 (worth retrying later).
    proxy.fail("DescribeRepositories", Fault::ServerError, 100);
    let out = privateer(
        &env.dir,
        &["target", "ensure", "--config", config, "mirror/y"],
    );
    assert_eq!(out.status.code(), Some(4), "{}", text(&out.stderr));

    // No credentials anywhere in the chain: exit 3, saying so.
    let out = privateer_as(&env.dir, &["target", "check", "--config", config], &[]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    assert!(err.starts_with("privateer: AWS credentials: "), "{err}");
    assert!(err.contains("no credentials found in chain"), "{err}");

    // A target that is not an ECR host is bad input: exit 2.
    std::fs::write(env.dir.join("bad.yaml"), "target:\n  registry: ghcr.io\n").unwrap();
    let bad = env.dir.join("bad.yaml");
    let out = privateer(
        &env.dir,
        &["target", "check", "--config", bad.to_str().unwrap()],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("not an ECR registry host"));
}
