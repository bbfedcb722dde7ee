//! privateer as a platform team installs it, on the real node: `helm install` with the image
//! built by `just image` (pushed to the environment's images registry) and the chart's defaults
//! otherwise — two replicas electing a leader through a Lease, the chart's self-signed TLS, the
//! webhook called by the API server through its Service, copy Jobs from the same image as the
//! `privateer-copy` ServiceAccount, the operator on its own ServiceAccount (no kubeconfig in the
//! cluster), AWS credentials through IRSA: each ServiceAccount names its role, its Pods get a
//! projected token that the SDK exchanges at STS (moto's) — the node's instance metadata is out
//! of their reach, so no other credentials exist. Then a Deployment of
//! `nginx:1.27` is rewritten, held by the gate (not scheduled), mirrored by a copy Job that runs
//! as a container, released, pulled from the target by digest and Running, and answers HTTP
//! through its Service from another Pod.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Namespace, Pod, Service};
use kube::api::{Api, ListParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use privateer_api::{ImageMirror, Phase};
use privateer_e2e::TestEnv;
use privateer_e2e::images::{Format, Index, Pusher};
use privateer_e2e::moto::ACCOUNT;
use privateer_e2e::pod_identity::{AUDIENCE, TOKEN_DIR};
use privateer_e2e::registry::oci_client;
use serde_json::json;

mod common;
use common::installed::*;

fn role(name: &str) -> String {
    format!("arn:aws:iam::{ACCOUNT}:role/{name}")
}

/// The Pod carries its ServiceAccount's role and the projected STS token, as on EKS.
fn assert_web_identity(pod: &Pod, role: &str) {
    let spec = pod.spec.as_ref().unwrap();
    let env = spec.containers[0].env.clone().unwrap_or_default();
    let value = |name: &str| {
        env.iter()
            .find(|v| v.name == name)
            .and_then(|v| v.value.clone())
    };
    assert_eq!(value("AWS_ROLE_ARN").as_deref(), Some(role), "{env:?}");
    assert_eq!(
        value("AWS_WEB_IDENTITY_TOKEN_FILE"),
        Some(format!("{TOKEN_DIR}/token"))
    );
    let audiences: Vec<_> = spec
        .volumes
        .iter()
        .flatten()
        .filter_map(|v| v.projected.as_ref())
        .flat_map(|p| p.sources.iter().flatten())
        .filter_map(|s| s.service_account_token.as_ref()?.audience.as_deref())
        .collect();
    assert!(audiences.contains(&AUDIENCE), "{:?}", spec.volumes);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn helm_installed_privateer_mirrors_a_deployment_that_then_runs_from_the_mirror() {
    let Some(env) = TestEnv::full()
        .irsa()
        .start_or_skip("privateer in the cluster")
        .await
        .unwrap()
    else {
        return;
    };
    let client = env.client();
    // docker.io/library/nginx:1.27: an index whose amd64 child really runs (busybox httpd).
    let source = env.source.as_ref().unwrap();
    let httpd = ["httpd", "-f", "-p", "80", "-h", "/www"];
    let nginx = Index::busybox(
        Format::Oci,
        "nginx 1.27",
        &["linux/amd64", "linux/arm64"],
        &httpd,
    )
    .unwrap();
    Pusher::new(oci_client(), source.auth())
        .push_index(&source.host, "library/nginx", "1.27", &nginx)
        .await
        .unwrap();

    let roles = format!(
        "serviceAccount: {{irsaRoleArn: \"{}\"}}\ncopyServiceAccount: {{irsaRoleArn: \"{}\"}}\n",
        role("privateer"),
        role("privateer-copy")
    );
    let notes = install(&env, &source.host, &roles, "shop").await;
    assert!(!notes.contains("WARNING: image.repository"), "{notes}");

    // Two Ready replicas from the image, one of them holding the controller's Lease.
    let operator: Api<Pod> = Api::namespaced(client.clone(), "privateer");
    let replicas = operator_pods(&env).await;
    assert_eq!(replicas.len(), 2, "{replicas:?}");
    for pod in &replicas {
        assert!(ready(pod), "{:?}", pod.status);
        let spec = pod.spec.as_ref().unwrap();
        assert_eq!(
            spec.containers[0].image.as_deref(),
            env.privateer_image.as_deref()
        );
        assert_eq!(spec.service_account_name.as_deref(), Some("privateer"));
        assert_web_identity(pod, &role("privateer"));
    }
    let names: Vec<String> = replicas
        .iter()
        .map(|p| p.metadata.name.clone().unwrap())
        .collect();
    let leases: Api<Lease> = Api::namespaced(client.clone(), "privateer");
    let holder = eventually(30, "a replica leads", async || {
        let all = leases
            .list(&ListParams::default())
            .await
            .map_err(|e| e.to_string())?;
        all.items
            .iter()
            .filter_map(|l| l.spec.as_ref()?.holder_identity.clone())
            .find(|h| names.iter().any(|n| h.contains(n.as_str())))
            .ok_or_else(|| format!("{:?}", all.items))
    })
    .await;
    eprintln!("leader: {holder}");
    // One ImageMirror watch per process (its index), leader and standby alike: the webhook,
    // the reconciler, the gate releaser and the metrics all read it.
    let watches = eventually(30, "one ImageMirror watch per replica", async || {
        let metrics = client
            .request_text(http::Request::get("/metrics").body(Vec::new()).unwrap())
            .await
            .map_err(|e| e.to_string())?;
        let watches: f64 = metrics
            .lines()
            .filter(|l| l.starts_with("apiserver_longrunning_requests{"))
            .filter(|l| l.contains("resource=\"imagemirrors\"") && l.contains("verb=\"WATCH\""))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum();
        if watches == 2.0 {
            Ok(watches)
        } else {
            Err(format!("{watches} watches"))
        }
    })
    .await;
    assert_eq!(watches, 2.0);

    // A Deployment in a watched namespace, and every state its Pod passes through.
    let pods: Api<Pod> = Api::namespaced(client.clone(), "shop");
    let ecr = ecr_prefix();
    let seen = tokio::spawn(
        watcher(pods.clone(), watcher::Config::default().labels("app=web"))
            .applied_objects()
            .take_while(|pod| futures::future::ready(!pod.as_ref().is_ok_and(ready)))
            .try_collect::<Vec<Pod>>(),
    );
    let deployment = json!({"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "shop"},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "web", "image": "nginx:1.27",
                    "readinessProbe": {"httpGet": {"path": "/", "port": 80}, "periodSeconds": 1}}]}}}});
    let deployments: Api<k8s_openapi::api::apps::v1::Deployment> =
        Api::namespaced(client.clone(), "shop");
    deployments
        .create(
            &PostParams::default(),
            &serde_json::from_value(deployment).unwrap(),
        )
        .await
        .unwrap();
    let service: Service = serde_json::from_value(json!({"metadata": {"name": "web"},
        "spec": {"selector": {"app": "web"}, "ports": [{"port": 80}]}}))
    .unwrap();
    let service = Api::<Service>::namespaced(client.clone(), "shop")
        .create(&PostParams::default(), &service)
        .await
        .unwrap();

    let history = tokio::time::timeout(Duration::from_secs(180), seen)
        .await
        .expect("the web Pod was not Ready within 180 s")
        .unwrap()
        .unwrap();
    let first = &history[0];
    let stored = first.spec.as_ref().unwrap().containers[0]
        .image
        .clone()
        .unwrap();
    assert!(stored.starts_with(&ecr), "stored image {stored}");
    let gates = first
        .spec
        .as_ref()
        .unwrap()
        .scheduling_gates
        .clone()
        .unwrap_or_default();
    assert!(
        gates.iter().any(|g| g.name == "privateer.dev/mirror"),
        "created without the gate: {:?}",
        first.spec
    );
    // While gated the scheduler left it alone.
    for pod in &history {
        let spec = pod.spec.as_ref().unwrap();
        if spec
            .scheduling_gates
            .as_ref()
            .is_some_and(|g| !g.is_empty())
        {
            assert!(spec.node_name.is_none(), "a gated Pod was scheduled");
        }
    }

    // The mirror, the copy Job that made it (as a container, as privateer-copy) and the Pod.
    let mirrors: Api<ImageMirror> = Api::all(client.clone());
    let mirror = mirrors
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .find(|m| m.spec.source.ends_with("library/nginx:1.27") || m.spec.source == "nginx:1.27")
        .expect("an ImageMirror for nginx:1.27");
    assert_eq!(mirror.phase(), Phase::Ready);
    let status = mirror.status.clone().unwrap();
    let target = status.target_image.clone().unwrap();
    let digest = target.rsplit_once('@').unwrap().1.to_owned();
    let jobs: Api<Job> = Api::namespaced(client.clone(), "privateer");
    let job = jobs
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .find(|j| j.status.as_ref().and_then(|s| s.succeeded) == Some(1))
        .expect("a copy Job that succeeded");
    let job_name = job.metadata.name.clone().unwrap();
    let copy_pods = operator
        .list(&ListParams::default().labels(&format!("job-name={job_name}")))
        .await
        .unwrap()
        .items;
    let copy_pod = copy_pods
        .iter()
        .find(|p| phase(p) == "Succeeded")
        .expect("a Completed copy Pod");
    assert_eq!(
        copy_pod
            .spec
            .as_ref()
            .unwrap()
            .service_account_name
            .as_deref(),
        Some("privateer-copy")
    );
    assert_eq!(
        copy_pod.spec.as_ref().unwrap().containers[0]
            .image
            .as_deref(),
        env.privateer_image.as_deref()
    );
    assert_web_identity(copy_pod, &role("privateer-copy"));
    // Both roles were exchanged for credentials: the operator's (repository creation) and
    // the copy Pod's (the push's authorization token).
    let assumed = env.moto.as_ref().unwrap().assumed_roles().await.unwrap();
    for expected in [role("privateer"), role("privateer-copy")] {
        assert!(assumed.contains(&expected), "{expected} not in {assumed:?}");
    }

    let web = pods
        .list(&ListParams::default().labels("app=web"))
        .await
        .unwrap()
        .items
        .into_iter()
        .find(ready)
        .unwrap();
    assert_eq!(
        web.spec.as_ref().unwrap().node_name.as_deref(),
        Some(privateer_e2e::node::NODE_NAME)
    );
    let image = web.spec.as_ref().unwrap().containers[0]
        .image
        .clone()
        .unwrap();
    assert!(
        image.starts_with(&ecr) && image.ends_with(&digest),
        "{image} vs {target}"
    );
    let container = &web
        .status
        .as_ref()
        .unwrap()
        .container_statuses
        .as_ref()
        .unwrap()[0];
    assert!(
        container.image_id.ends_with(&digest),
        "the runtime ran {} rather than the mirror {digest}",
        container.image_id
    );

    // Another Pod (in a namespace privateer skips) reaches it through the Service.
    let cluster_ip = service.spec.unwrap().cluster_ip.unwrap();
    let probe_ns: Namespace = serde_json::from_value(json!({"metadata": {"name": "probe",
        "labels": {"privateer.dev/skip": "true"}}}))
    .unwrap();
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &probe_ns)
        .await
        .unwrap();
    let probes: Api<Pod> = Api::namespaced(client.clone(), "probe");
    let probe: Pod = serde_json::from_value(json!({"metadata": {"name": "probe"},
        "spec": {"restartPolicy": "Never", "containers": [{"name": "probe", "image": "nginx:1.27",
            "command": ["wget", "-q", "-O", "-", format!("http://{cluster_ip}/")]}]}}))
    .unwrap();
    probes.create(&PostParams::default(), &probe).await.unwrap();
    eventually(60, "the probe Pod succeeds", async || {
        let pod = probes.get("probe").await.map_err(|e| e.to_string())?;
        match phase(&pod) {
            "Succeeded" => Ok(()),
            other => Err(format!("{other}: {:?}", pod.status)),
        }
    })
    .await;
    let answer = probes.logs("probe", &Default::default()).await.unwrap();
    assert_eq!(answer.trim(), "served by nginx 1.27 (linux/amd64)");

    helm(
        &env,
        &["uninstall", "privateer", "-n", "privateer", "--wait"],
    );
}
