//! Tests that prove the local environment is real: the API server serves the CRD, the real Job
//! controller and garbage collector act, the real node (kubelet, containerd, kube-proxy,
//! kube-scheduler) runs Pods from the local registries and leaves nothing behind, the
//! registries speak the distribution protocol and moto's ECR tokens open the target registry.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::time::Duration;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, ContainerStateTerminated, Pod};
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use kube::runtime::wait::{await_condition, conditions};
use privateer_e2e::TestEnv;
use privateer_e2e::env::wait_pod_phase;
use privateer_e2e::images::{Format, Image, Index, Pusher, layer};
use privateer_e2e::registry::oci_client;
use serde_json::json;

macro_rules! env_or_skip {
    ($builder:expr, $name:expr) => {
        match $builder.start_or_skip($name).await.unwrap() {
            Some(env) => env,
            None => return,
        }
    };
}

#[tokio::test]
async fn api_server_accepts_the_crd_and_kubectl_prints_the_columns() {
    let env = env_or_skip!(TestEnv::builder().control_plane(), "crd");
    env.install_crd().await.unwrap();
    let mirror = "apiVersion: privateer.dev/v1alpha1\nkind: ImageMirror\nmetadata:\n  name: docker.io-library-nginx-1.27\nspec:\n  source: nginx:1.27\n";
    let path = env.dir.join("mirror.yaml");
    std::fs::write(&path, mirror).unwrap();
    let out = env
        .kubectl()
        .args(["apply", "-f"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let out = env
        .kubectl()
        .args(["get", "imagemirrors"])
        .output()
        .unwrap();
    let table = String::from_utf8(out.stdout).unwrap();
    let header: Vec<&str> = table.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        [
            "NAME", "SOURCE", "PHASE", "DIGEST", "ATTEMPTS", "PODS", "AGE"
        ],
        "{table}"
    );
    assert!(table.contains("nginx:1.27"), "{table}");
    let out = env
        .kubectl()
        .args(["get", "imir", "-o", "wide"])
        .output()
        .unwrap();
    let wide = String::from_utf8(out.stdout).unwrap();
    assert!(wide.lines().next().unwrap().ends_with("TARGET"), "{wide}");

    // The CEL rule: spec.source cannot change.
    let out = env
        .kubectl()
        .args([
            "patch",
            "imagemirror",
            "docker.io-library-nginx-1.27",
            "--type=merge",
            "-p",
            r#"{"spec":{"source":"nginx:1.28"}}"#,
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("spec.source is immutable"));
}

fn job(name: &str, image: &str, args: &[&str]) -> Job {
    serde_json::from_value(json!({
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": name},
        "spec": {"backoffLimit": 0, "template": {"spec": {
            "restartPolicy": "Never",
            "containers": [{"name": "main", "image": image, "args": args,
                "terminationMessagePolicy": "FallbackToLogsOnError"}]}}}
    }))
    .unwrap()
}

async fn wait_job(jobs: &Api<Job>, name: &str, condition: &'static str) -> Job {
    let done = await_condition(jobs.clone(), name, move |job: Option<&Job>| {
        job.and_then(|j| j.status.as_ref())
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|c| c.iter().any(|c| c.type_ == condition && c.status == "True"))
    });
    tokio::time::timeout(Duration::from_secs(60), done)
        .await
        .unwrap()
        .unwrap()
        .unwrap()
}

/// How the container of job `name`'s pod ended.
async fn job_container_exit(pods: &Api<Pod>, name: &str) -> ContainerStateTerminated {
    let list = pods
        .list(&ListParams::default().labels(&format!("job-name={name}")))
        .await
        .unwrap();
    list.items[0]
        .status
        .as_ref()
        .unwrap()
        .container_statuses
        .as_ref()
        .unwrap()[0]
        .state
        .clone()
        .unwrap()
        .terminated
        .unwrap()
}

#[tokio::test]
async fn jobs_run_privateers_image_on_the_node_to_complete_or_failed() {
    let env = env_or_skip!(TestEnv::builder().node(), "jobs");
    let image = env.privateer_image.clone().unwrap();
    let jobs: Api<Job> = Api::namespaced(env.client(), "default");
    let pods: Api<Pod> = Api::namespaced(env.client(), "default");
    for (name, reference, outcome) in [("ok", "nginx", "Complete"), ("fails", "NGINX", "Failed")] {
        jobs.create(
            &PostParams::default(),
            &job(name, &image, &["image", "normalize", reference]),
        )
        .await
        .unwrap();
        wait_job(&jobs, name, outcome).await;
    }
    assert_eq!(job_container_exit(&pods, "ok").await.exit_code, 0);
    // The kubelet's termination message: the logs, since the program failed.
    let terminated = job_container_exit(&pods, "fails").await;
    assert_eq!(terminated.exit_code, 2);
    assert!(
        terminated
            .message
            .unwrap_or_default()
            .contains("must be lowercase")
    );
}

/// A busybox Pod from the "public" registry serves HTTP; another Pod reaches it through a
/// ClusterIP Service (kube-proxy) and `kubernetes.default` answers from inside a Pod.
#[tokio::test]
async fn pods_pull_from_the_registries_and_reach_each_other_through_services() {
    use k8s_openapi::api::core::v1::Service;
    let env = env_or_skip!(TestEnv::builder().node(), "pods");
    env.push_runnable("library/busybox", "1.36", &["sh"])
        .await
        .unwrap();
    let pods: Api<Pod> = Api::namespaced(env.client(), "default");
    let server: Pod = serde_json::from_value(
        json!({"metadata": {"name": "web", "labels": {"app": "web"}},
        "spec": {"containers": [{"name": "web", "image": "busybox:1.36",
            "command": ["httpd", "-f", "-p", "8080", "-h", "/www"]}]}}),
    )
    .unwrap();
    pods.create(&PostParams::default(), &server).await.unwrap();
    let services: Api<Service> = Api::namespaced(env.client(), "default");
    let service: Service = serde_json::from_value(json!({"metadata": {"name": "web"},
        "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": 8080}]}}))
    .unwrap();
    let service = services
        .create(&PostParams::default(), &service)
        .await
        .unwrap();
    let cluster_ip = service.spec.unwrap().cluster_ip.unwrap();
    wait_pod_phase(&pods, "web", "Running").await.unwrap();

    // wget through the ClusterIP; the API server through kubernetes.default's ClusterIP.
    let script = format!(
        "wget -q -O - http://{cluster_ip}/ && nc -w 5 $KUBERNETES_SERVICE_HOST $KUBERNETES_SERVICE_PORT </dev/null && echo api-reachable"
    );
    let client: Pod = serde_json::from_value(json!({"metadata": {"name": "client"},
        "spec": {"restartPolicy": "Never", "containers": [{"name": "client", "image": "busybox:1.36",
            "command": ["sh", "-c", script]}]}}))
    .unwrap();
    pods.create(&PostParams::default(), &client).await.unwrap();
    wait_pod_phase(&pods, "client", "Succeeded").await.unwrap();
    let logs = pods.logs("client", &Default::default()).await.unwrap();
    assert!(logs.contains("served by library/busybox:1.36"), "{logs}");
    assert!(logs.contains("api-reachable"), "{logs}");
}

#[tokio::test]
async fn deleting_an_owner_deletes_its_dependents() {
    let env = env_or_skip!(TestEnv::builder().control_plane(), "garbage collector");
    let maps: Api<ConfigMap> = Api::namespaced(env.client(), "default");
    let owner = maps
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "owner"}})).unwrap(),
        )
        .await
        .unwrap();
    let uid = owner.metadata.uid.unwrap();
    let dependent = json!({"metadata": {"name": "dependent", "ownerReferences": [
        {"apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": uid}]}});
    maps.create(
        &PostParams::default(),
        &serde_json::from_value(dependent).unwrap(),
    )
    .await
    .unwrap();
    maps.delete("owner", &DeleteParams::background())
        .await
        .unwrap();
    let gone = await_condition(maps.clone(), "dependent", conditions::is_deleted(""));
    tokio::time::timeout(Duration::from_secs(60), gone)
        .await
        .expect("garbage collector deletes the dependent")
        .unwrap();
}

#[tokio::test]
async fn multi_platform_image_round_trips_through_the_registry() {
    let env = env_or_skip!(TestEnv::builder().registries(), "registry round trip");
    let source = env.source.as_ref().unwrap();
    let pusher = Pusher::new(oci_client(), source.auth());
    for format in [Format::Oci, Format::Docker] {
        let index = Index::multi_platform(
            format,
            &["linux/amd64", "linux/arm64/v8", "linux/s390x"],
            7,
            64 * 1024,
        );
        let digest = pusher
            .push_index(&source.host, "library/app", "1.0", &index)
            .await
            .unwrap();
        assert_eq!(digest, index.manifest.digest);
        let (bytes, pulled) = pusher
            .pull_manifest(&source.host, "library/app", &digest)
            .await
            .unwrap();
        assert_eq!(pulled, digest);
        assert_eq!(bytes, index.manifest.data, "manifest bytes survive");
        for image in &index.images {
            let (bytes, _) = pusher
                .pull_manifest(&source.host, "library/app", &image.manifest.digest)
                .await
                .unwrap();
            assert_eq!(bytes, image.manifest.data);
            let blob = pusher
                .pull_blob(&source.host, "library/app", &image.layers[1].digest)
                .await
                .unwrap();
            assert_eq!(blob, image.layers[1].data);
        }
    }
    // A big layer streams in with bounded memory (generated and hashed chunk by chunk).
    let size = 48 << 20;
    let big = pusher
        .push_generated_layer(&source.host, "team/big", 42, size)
        .await
        .unwrap();
    let streamed = Image::with_layer_digests(Format::Oci, "linux/amd64", &[(big, size)]);
    // Single-platform images of both formats, with many small layers.
    let layers = (0..20).map(|i| layer(100 + i, 1024)).collect();
    let many_small = Image::new(Format::Docker, "linux/amd64", layers);
    for (repository, image) in [("team/big", &streamed), ("team/small", &many_small)] {
        // The registry refuses a manifest whose blobs it lacks, so this proves the layers landed.
        pusher
            .push_image(&source.host, repository, "v1", image)
            .await
            .unwrap();
        let (_, digest) = pusher
            .pull_manifest(&source.host, repository, "v1")
            .await
            .unwrap();
        assert_eq!(digest, image.manifest.digest);
    }
}

#[tokio::test]
async fn moto_serves_ecr_and_its_token_opens_the_target_registry() {
    let env = env_or_skip!(TestEnv::builder().registries(), "moto");
    let moto = env.moto.as_ref().unwrap();
    let ecr = moto.ecr_client().await;
    let created = ecr
        .create_repository()
        .repository_name("mirror/docker.io/library/nginx")
        .send()
        .await
        .unwrap();
    assert!(
        created
            .repository()
            .unwrap()
            .repository_uri()
            .unwrap()
            .ends_with("/mirror/docker.io/library/nginx")
    );
    let again = ecr
        .create_repository()
        .repository_name("mirror/docker.io/library/nginx")
        .send()
        .await;
    let err = again.unwrap_err().into_service_error();
    assert!(err.is_repository_already_exists_exception(), "{err:?}");

    // The token moto hands out is what the target registry accepts.
    let (user, password) = moto.registry_credentials().await.unwrap();
    assert_eq!(user, "AWS");
    let target = env.target.as_ref().unwrap();
    let image = Image::new(Format::Oci, "linux/amd64", vec![layer(1, 4096)]);
    let pusher = Pusher::new(
        oci_client(),
        oci_client::secrets::RegistryAuth::Basic(user, password),
    );
    pusher
        .push_image(
            &target.host,
            "mirror/docker.io/library/nginx",
            "1.27",
            &image,
        )
        .await
        .unwrap();
    // And a wrong password is refused.
    let wrong = Pusher::new(
        oci_client(),
        oci_client::secrets::RegistryAuth::Basic("AWS".into(), "wrong".into()),
    );
    assert!(
        wrong
            .push_image(&target.host, "mirror/x", "1", &image)
            .await
            .is_err()
    );
}
