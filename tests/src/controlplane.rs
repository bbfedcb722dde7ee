//! etcd, kube-apiserver and kube-controller-manager on loopback, with an admin kubeconfig.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::Context;

use crate::pki::{Ca, service_account_key};
use crate::process::{Managed, free_port};

/// The admission plugins switched on besides the defaults (webhooks are on by default; named
/// so that a future default change cannot silently drop them).
const ADMISSION_PLUGINS: &str = "NamespaceLifecycle,ServiceAccount,MutatingAdmissionWebhook,ValidatingAdmissionWebhook,ValidatingAdmissionPolicy";
/// What kube-controller-manager runs: Jobs, Deployments and ReplicaSets (the demo's workload),
/// garbage collection, service accounts and their tokens, namespace deletion, TTL of finished
/// Jobs, Service endpoints (kube-proxy routes by EndpointSlices), the root CA each namespace's
/// Pods trust (`kube-root-ca.crt`), PodDisruptionBudgets, removal of orphaned Pods and node
/// lifecycle (it lifts the `not-ready` taint a kubelet registers with).
const CONTROLLERS: &str = "job-controller,deployment-controller,replicaset-controller,garbage-collector-controller,serviceaccount-token-controller,serviceaccount-controller,namespace-controller,ttl-after-finished-controller,endpoints-controller,endpointslice-controller,root-ca-certificate-publisher-controller,disruption-controller,pod-garbage-collector-controller,node-lifecycle-controller";

pub struct ControlPlane {
    pub url: String,
    pub kubeconfig: PathBuf,
    pub admin_token: String,
    /// Bearer tokens of the node's kubelet, kube-proxy and kube-scheduler.
    pub node_tokens: [String; 3],
    pub processes: Vec<Managed>,
}

/// How the control plane is started.
#[derive(Default)]
pub struct Options<'a> {
    /// The ImagePolicyWebhook admission configuration, if any.
    pub admission_config: Option<&'a Path>,
    /// With a node: the API server listens on the node's bridge address (so Pods reach it as
    /// `kubernetes.default`), publishes that address as the `kubernetes` endpoint and calls the
    /// kubelet with a client certificate.
    pub node: bool,
}

fn random_token() -> String {
    use sha2::{Digest, Sha256};
    let seed = format!(
        "{:?}{}{:?}",
        std::time::SystemTime::now(),
        std::process::id(),
        std::thread::current().id()
    );
    let digest = Sha256::digest(seed.as_bytes());
    digest.iter().take(16).map(|b| format!("{b:02x}")).collect()
}

pub fn kubeconfig_yaml(server: &str, ca_file: &Path, token: &str, user: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: privateer-test\n  cluster:\n    server: {server}\n    certificate-authority: {ca}\nusers:\n- name: {user}\n  user:\n    token: {token}\ncontexts:\n- name: privateer-test\n  context:\n    cluster: privateer-test\n    user: {user}\ncurrent-context: privateer-test\n",
        ca = ca_file.display()
    )
}

/// Starts the three processes in `dir` and waits until the API server is ready.
pub fn start(
    bin: &Path,
    dir: &Path,
    ca: &Ca,
    options: Options<'_>,
) -> anyhow::Result<ControlPlane> {
    let admission_config = options.admission_config;
    let address = if options.node {
        crate::node::NODE_IP
    } else {
        std::net::Ipv4Addr::LOCALHOST
    };
    let mut processes = Vec::new();
    let pki = dir.join("pki");
    std::fs::create_dir_all(&pki)?;
    let ca_file = pki.join("ca.crt");
    ca.write_cert(&ca_file)?;
    let serving = ca.serving_cert(
        &pki,
        "apiserver",
        &[
            "kubernetes",
            "kubernetes.default",
            "kubernetes.default.svc",
            &crate::node::NODE_IP.to_string(),
            &crate::node::network::KUBERNETES_SERVICE_IP.to_string(),
        ],
    )?;
    let (sa_key, sa_pub) = service_account_key(&pki)?;

    // etcd
    let etcd_client = free_port()?;
    let etcd_peer = free_port()?;
    let mut etcd = Command::new(bin.join("etcd"));
    etcd.args([
        "--name=privateer-test",
        &format!("--data-dir={}", dir.join("etcd").display()),
        &format!("--listen-client-urls=http://127.0.0.1:{etcd_client}"),
        &format!("--advertise-client-urls=http://127.0.0.1:{etcd_client}"),
        &format!("--listen-peer-urls=http://127.0.0.1:{etcd_peer}"),
        &format!("--initial-advertise-peer-urls=http://127.0.0.1:{etcd_peer}"),
        &format!("--initial-cluster=privateer-test=http://127.0.0.1:{etcd_peer}"),
        "--unsafe-no-fsync",
        "--log-level=warn",
    ]);
    let mut etcd = Managed::spawn("etcd", etcd, dir)?;
    etcd.wait_for_port(
        ([127, 0, 0, 1], etcd_client).into(),
        Duration::from_secs(30),
    )?;
    processes.push(etcd);

    // kube-apiserver
    let admin_token = random_token();
    let kcm_token = random_token();
    let node_tokens = [random_token(), random_token(), random_token()];
    let tokens = pki.join("tokens.csv");
    std::fs::write(
        &tokens,
        format!(
            "{admin_token},admin,admin,\"system:masters\"\n{kcm_token},system:kube-controller-manager,kcm,\"system:masters\"\n\
             {},system:node:{node},kubelet,\"system:masters,system:nodes\"\n\
             {},system:kube-proxy,kube-proxy,\"system:masters\"\n\
             {},system:kube-scheduler,kube-scheduler,\"system:masters\"\n",
            node_tokens[0],
            node_tokens[1],
            node_tokens[2],
            node = crate::node::NODE_NAME,
        ),
    )?;
    let kubelet_client = if options.node {
        Some(ca.client_cert(
            &pki,
            "apiserver-kubelet-client",
            "kube-apiserver",
            "system:masters",
        )?)
    } else {
        None
    };
    let apiserver_command = |port: u16| {
        let mut apiserver = Command::new(bin.join("kube-apiserver"));
        apiserver.args([
            &format!("--etcd-servers=http://127.0.0.1:{etcd_client}"),
            &format!("--bind-address={address}"),
            &format!("--advertise-address={address}"),
            &format!("--secure-port={port}"),
            &format!("--tls-cert-file={}", serving.cert.display()),
            &format!("--tls-private-key-file={}", serving.key.display()),
            &format!("--client-ca-file={}", ca_file.display()),
            &format!("--token-auth-file={}", tokens.display()),
            "--authorization-mode=RBAC",
            &format!("--service-account-key-file={}", sa_pub.display()),
            &format!("--service-account-signing-key-file={}", sa_key.display()),
            "--service-account-issuer=https://kubernetes.default.svc",
            "--service-cluster-ip-range=10.0.0.0/24",
            &format!("--enable-admission-plugins={ADMISSION_PLUGINS}"),
            &format!("--cert-dir={}", pki.display()),
            "--allow-privileged=true",
            "--enable-priority-and-fairness=false",
            "--profiling=false",
            "--v=1",
        ]);
        if let Some(client) = &kubelet_client {
            apiserver.args([
                &format!("--kubelet-client-certificate={}", client.cert.display()),
                &format!("--kubelet-client-key={}", client.key.display()),
                &format!("--kubelet-certificate-authority={}", ca_file.display()),
                "--kubelet-preferred-address-types=InternalIP",
            ]);
        } else {
            // No kubernetes Service endpoints: 127.0.0.1 is not a valid endpoint address.
            apiserver.arg("--endpoint-reconciler-type=none");
        }
        if let Some(config) = &admission_config {
            apiserver.arg(format!(
                "--admission-control-config-file={}",
                config.display()
            ));
            apiserver.arg(format!(
                "--enable-admission-plugins={ADMISSION_PLUGINS},ImagePolicyWebhook"
            ));
        }
        apiserver
    };
    // A port free on loopback when asked may be taken on the node's bridge address by the time
    // the API server binds it (a connection's local port): then it tries another.
    let mut attempts = 0;
    let (apiserver, port) = loop {
        let port = free_port()?;
        let mut apiserver = Managed::spawn("kube-apiserver", apiserver_command(port), dir)?;
        match apiserver.wait_for_port((address, port).into(), Duration::from_secs(60)) {
            Ok(()) => break (apiserver, port),
            Err(e) if attempts < 3 && apiserver.log_tail(5).contains("address already in use") => {
                attempts += 1;
                eprintln!("kube-apiserver: port {port} was taken, trying another ({e})");
            }
            Err(e) => return Err(e),
        }
    };
    let url = format!("https://{address}:{port}");
    processes.push(apiserver);

    let kubeconfig = dir.join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        kubeconfig_yaml(&url, &ca_file, &admin_token, "admin"),
    )?;
    let kcm_kubeconfig = dir.join("kcm.kubeconfig");
    std::fs::write(
        &kcm_kubeconfig,
        kubeconfig_yaml(&url, &ca_file, &kcm_token, "kcm"),
    )?;

    // kube-controller-manager
    let mut kcm = Command::new(bin.join("kube-controller-manager"));
    kcm.args([
        &format!("--kubeconfig={}", kcm_kubeconfig.display()),
        &format!("--controllers={CONTROLLERS}"),
        &format!("--service-account-private-key-file={}", sa_key.display()),
        &format!("--root-ca-file={}", ca_file.display()),
        "--leader-elect=false",
        "--bind-address=127.0.0.1",
        &format!("--secure-port={}", free_port()?),
        &format!("--cert-dir={}", dir.join("kcm-certs").display()),
        "--concurrent-job-syncs=10",
        "--v=1",
    ]);
    processes.push(Managed::spawn("kube-controller-manager", kcm, dir)?);

    Ok(ControlPlane {
        url,
        kubeconfig,
        admin_token,
        node_tokens,
        processes,
    })
}

/// A kube client for a kubeconfig file.
pub async fn client(kubeconfig: &Path) -> anyhow::Result<kube::Client> {
    let config = kube::config::Kubeconfig::read_from(kubeconfig).context("read kubeconfig")?;
    let config = kube::Config::from_custom_kubeconfig(config, &Default::default()).await?;
    Ok(kube::Client::try_from(config)?)
}
