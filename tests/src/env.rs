//! `TestEnv`: the whole local environment, or the parts a test asks for, stopped on drop.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::controlplane;
use crate::moto::Moto;
use crate::node::network::{Network, NodeLock};
use crate::node::{Mirror, NODE_IP, Node, NodeSpec};
use crate::pki::Ca;
use crate::process::Managed;
use crate::registry::Registry;
use crate::tools;

/// Which parts to start. `TestEnv::builder()` starts nothing until told.
#[derive(Default, Clone)]
pub struct Builder {
    control_plane: bool,
    node: bool,
    registries: bool,
    source_credentials: Option<(String, String)>,
    moto: bool,
    image_policy_config: Option<PathBuf>,
    irsa: bool,
    dir: Option<PathBuf>,
}

/// Handles to what runs. Dropping it stops every process it started, by PID.
pub struct TestEnv {
    pub dir: PathBuf,
    /// Present with the control plane.
    pub client: Option<kube::Client>,
    pub kubeconfig: Option<PathBuf>,
    pub api_url: Option<String>,
    /// The directory with etcd, kube-apiserver, kube-controller-manager, kubectl and helm.
    pub bin_dir: PathBuf,
    /// The CA behind the API server's certificate (and any a test asks for).
    pub ca: Ca,
    /// The "public" source registry.
    pub source: Option<Registry>,
    /// The ECR data plane stand-in: htpasswd user `AWS` with moto's token password.
    pub target: Option<Registry>,
    pub moto: Option<Moto>,
    /// With the node: the registry of the node's own images (the sandbox image as
    /// `registry.k8s.io/pause`, privateer's image as `<host>/privateer`).
    pub images: Option<Registry>,
    /// With the node: privateer's image as Pods name it (`<images host>/privateer:<tag>`).
    pub privateer_image: Option<String>,
    node: Option<Node>,
    /// With the node: its instance metadata service (the node role's AWS credentials).
    imds: Option<crate::imds::Imds>,
    /// With `irsa()`: what EKS's Pod Identity webhook does to Pods.
    pod_identity: Option<crate::pod_identity::PodIdentityWebhook>,
    processes: Vec<Managed>,
    /// Declared last: dropped after everything above, so the bridge outlives its users.
    network: Option<Network>,
    lock: Option<NodeLock>,
    keep: bool,
}

static COUNTER: AtomicUsize = AtomicUsize::new(0);

impl TestEnv {
    pub fn builder() -> Builder {
        Builder::default()
    }

    /// Everything: control plane, the node, registries, moto.
    pub fn full() -> Builder {
        Builder::default()
            .control_plane()
            .node()
            .registries()
            .moto()
    }

    /// The ECR target's registry host as image references name it.
    pub fn target_registry_host() -> String {
        format!(
            "{}.dkr.ecr.{}.amazonaws.com",
            crate::moto::ACCOUNT,
            crate::moto::REGION
        )
    }

    /// The node (when started), for its containerd CLI and its PIDs.
    pub fn node(&self) -> Option<&Node> {
        self.node.as_ref()
    }

    pub fn client(&self) -> kube::Client {
        self.client
            .clone()
            .expect("the control plane was not started")
    }

    /// PIDs of every process this environment started (to prove they are gone afterwards).
    pub fn pids(&self) -> Vec<u32> {
        let mut pids: Vec<u32> = self.processes.iter().map(Managed::pid).collect();
        pids.extend(
            self.source
                .iter()
                .chain(&self.target)
                .map(|r| r.process.pid()),
        );
        pids.extend(self.moto.iter().map(|m| m.process.pid()));
        pids.extend(self.images.iter().map(|r| r.process.pid()));
        pids.extend(self.node.iter().flat_map(Node::pids));
        pids
    }

    /// (what it is, PID) of every process this environment started (CPU and memory figures).
    pub fn named_pids(&self) -> Vec<(String, u32)> {
        let mut named: Vec<(String, u32)> = self
            .processes
            .iter()
            .map(|p| (p.name().to_owned(), p.pid()))
            .collect();
        for (what, registry) in [
            ("source registry", &self.source),
            ("target registry", &self.target),
            ("node images registry", &self.images),
        ] {
            named.extend(registry.iter().map(|r| (what.to_owned(), r.process.pid())));
        }
        named.extend(
            self.moto
                .iter()
                .map(|m| ("moto".to_owned(), m.process.pid())),
        );
        named.extend(self.node.iter().flat_map(Node::named_pids));
        named
    }

    /// A `kubectl` command against this environment.
    pub fn kubectl(&self) -> std::process::Command {
        let mut command = std::process::Command::new(self.bin_dir.join("kubectl"));
        if let Some(kubeconfig) = &self.kubeconfig {
            command.env("KUBECONFIG", kubeconfig);
        }
        command
    }

    /// `helm` against this control plane, its cache and configuration kept in the environment's
    /// directory (nothing written to `$HOME`).
    pub fn helm(&self) -> std::process::Command {
        let mut command = std::process::Command::new(self.bin_dir.join("helm"));
        if let Some(kubeconfig) = &self.kubeconfig {
            command.env("KUBECONFIG", kubeconfig);
        }
        for (var, dir) in [
            ("HELM_CACHE_HOME", "helm/cache"),
            ("HELM_CONFIG_HOME", "helm/config"),
            ("HELM_DATA_HOME", "helm/data"),
        ] {
            command.env(var, self.dir.join(dir));
        }
        command
    }

    /// Install the ImageMirror CRD (as generated into `crd/`) and wait until it is served.
    pub async fn install_crd(&self) -> anyhow::Result<()> {
        use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
        use kube::runtime::wait::{await_condition, conditions};
        const CRD: &str = include_str!("../../crd/imagemirrors.privateer.dev.yaml");
        let crd: CustomResourceDefinition = serde_yaml::from_str(CRD)?;
        let crds: kube::Api<CustomResourceDefinition> = kube::Api::all(self.client());
        crds.create(&kube::api::PostParams::default(), &crd).await?;
        let established = await_condition(
            crds,
            "imagemirrors.privateer.dev",
            conditions::is_crd_established(),
        );
        tokio::time::timeout(std::time::Duration::from_secs(30), established)
            .await
            .context("the CRD was not established within 30 s")??;
        Ok(())
    }

    /// Kills kube-apiserver and starts it again with the same flags (etcd keeps the state);
    /// returns once it serves `/readyz` again.
    pub async fn restart_api_server(&mut self) -> anyhow::Result<()> {
        let server = self
            .processes
            .iter_mut()
            .find(|p| p.name() == "kube-apiserver")
            .context("no API server started")?;
        server.restart()?;
        wait_ready(&self.client(), &mut self.processes).await
    }

    /// Kills the node's containerd and starts it again (running containers keep running under
    /// their shims, as on a real node).
    pub async fn restart_containerd(&mut self) -> anyhow::Result<()> {
        self.node
            .as_mut()
            .context("no node started")?
            .restart_containerd()
            .await
    }

    /// Keep the directory (logs, data) after drop, for a look after a failure.
    pub fn keep(&mut self) {
        self.keep = true;
    }
}

impl Drop for TestEnv {
    fn drop(&mut self) {
        // The node first (its containers, shims and mounts), while the API server still runs.
        self.node.take();
        // Reverse start order: controller manager, API server, then etcd.
        while let Some(mut process) = self.processes.pop() {
            process.stop();
        }
        self.source.take();
        self.target.take();
        self.moto.take();
        self.images.take();
        self.imds.take();
        self.pod_identity.take();
        self.network.take();
        self.lock.take();
        if self.keep || std::thread::panicking() {
            eprintln!(
                "test environment kept for inspection: {}",
                self.dir.display()
            );
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

impl Builder {
    pub fn control_plane(mut self) -> Self {
        self.control_plane = true;
        self
    }
    /// The node: containerd, kubelet, kube-proxy, kube-scheduler (needs the control plane and
    /// the registries, which then listen on the node's bridge address for Pods to reach).
    pub fn node(mut self) -> Self {
        self.control_plane = true;
        self.node = true;
        self.registries = true;
        self.moto = true;
        self
    }
    /// The "public" source registry and the ECR data-plane registry (which needs moto).
    pub fn registries(mut self) -> Self {
        self.registries = true;
        self.moto = true;
        self
    }
    /// Put the source registry behind htpasswd auth.
    pub fn source_credentials(mut self, user: &str, password: &str) -> Self {
        self.source_credentials = Some((user.to_owned(), password.to_owned()));
        self
    }
    pub fn moto(mut self) -> Self {
        self.moto = true;
        self
    }
    /// Enable the ImagePolicyWebhook admission plugin with this admission configuration file.
    pub fn image_policy_config(mut self, path: PathBuf) -> Self {
        self.image_policy_config = Some(path);
        self
    }
    /// IRSA as on EKS: Pods whose ServiceAccount names a role get a projected token and the
    /// web-identity variables (the Pod Identity webhook's mutation), exchanged at moto's STS;
    /// Pods cannot reach the node's instance metadata (EKS's advice: hop limit 1), so a
    /// Pod's AWS calls succeed only through its role.
    pub fn irsa(mut self) -> Self {
        self = self.node();
        self.irsa = true;
        self
    }
    /// Use this directory instead of a fresh temporary one (`just dev-up`).
    pub fn dir(mut self, dir: PathBuf) -> Self {
        self.dir = Some(dir);
        self
    }

    fn needed_programs(&self) -> Vec<PathBuf> {
        let mut needed = Vec::new();
        if self.control_plane {
            let bin = tools::controlplane_bin_dir();
            needed.extend(
                [
                    "etcd",
                    "kube-apiserver",
                    "kube-controller-manager",
                    "kubectl",
                ]
                .map(|b| bin.join(b)),
            );
        }
        if self.node {
            let bin = tools::controlplane_bin_dir();
            needed.extend(["kubelet", "kube-proxy", "kube-scheduler"].map(|b| bin.join(b)));
            needed.extend(
                [
                    "/usr/bin/containerd",
                    "/usr/sbin/runc",
                    "/usr/lib/cni/bridge",
                    "/usr/sbin/iptables",
                ]
                .map(PathBuf::from),
            );
            needed.push(PathBuf::from(crate::rootfs::BUSYBOX));
            needed.push(tools::pause_program());
            needed.push(crate::product_image::layout_dir().join("index.json"));
        }
        if self.registries {
            needed.push(tools::docker_registry());
        }
        if self.moto {
            needed.push(tools::moto_server());
        }
        needed
    }

    /// Starts the parts asked for. When a program is missing: an error under
    /// `PRIVATEER_REQUIRE_TESTENV` (CI), otherwise `Ok(None)` after a loud message, so a
    /// developer without the environment still runs the other tests.
    pub async fn start_or_skip(self, test: &str) -> anyhow::Result<Option<TestEnv>> {
        if let Err(missing) = tools::require(&self.needed_programs()) {
            if tools::environment_required() {
                return Err(missing);
            }
            eprintln!(
                "\n!!! SKIPPED {test}: {missing:#}\n!!! (set PRIVATEER_REQUIRE_TESTENV=1 to make this a failure)\n"
            );
            return Ok(None);
        }
        self.start().await.map(Some)
    }

    pub async fn start(self) -> anyhow::Result<TestEnv> {
        tools::require(&self.needed_programs())?;
        let dir = match &self.dir {
            Some(dir) => dir.clone(),
            None => std::env::temp_dir().join(format!(
                "privateer-testenv-{}-{}",
                std::process::id(),
                COUNTER.fetch_add(1, Ordering::Relaxed)
            )),
        };
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
        let mut env = TestEnv {
            dir: dir.clone(),
            client: None,
            kubeconfig: None,
            api_url: None,
            bin_dir: tools::controlplane_bin_dir(),
            ca: Ca::new("privateer-test-ca")?,
            source: None,
            target: None,
            moto: None,
            images: None,
            privateer_image: None,
            node: None,
            imds: None,
            pod_identity: None,
            processes: Vec::new(),
            network: None,
            lock: None,
            keep: false,
        };
        // A failed start keeps the directory (the logs say why).
        match self.start_parts(&mut env).await {
            Ok(()) => Ok(env),
            Err(error) => {
                env.keep = true;
                Err(error)
            }
        }
    }

    async fn start_parts(self, env: &mut TestEnv) -> anyhow::Result<()> {
        let dir = env.dir.clone();
        // Servers Pods reach listen on the node's address; without a node, on loopback.
        let address = if self.node {
            env.lock = Some(NodeLock::acquire()?);
            crate::node::teardown::sweep_stale();
            env.network = Some(Network::create()?);
            NODE_IP
        } else {
            std::net::Ipv4Addr::LOCALHOST
        };
        let mut node_tokens: [String; 3] = Default::default();
        // Every process started so far is owned by `env`: an error below drops it, stopping them.
        if self.moto {
            env.moto = Some(Moto::start_at(&dir, address)?);
        }
        if self.registries {
            let creds = self
                .source_credentials
                .as_ref()
                .map(|(u, p)| (u.as_str(), p.as_str()));
            env.source = Some(Registry::start_at("source", &dir, creds, address)?);
            let moto = env
                .moto
                .as_ref()
                .context("the target registry needs moto")?;
            let (user, password) = moto.registry_credentials().await?;
            env.target = Some(Registry::start_at(
                "target",
                &dir,
                Some((&user, &password)),
                address,
            )?);
        }
        if self.control_plane {
            let plane = controlplane::start(
                &env.bin_dir,
                &dir,
                &env.ca,
                controlplane::Options {
                    admission_config: self.image_policy_config.as_deref(),
                    node: self.node,
                },
            )?;
            node_tokens = plane.node_tokens.clone();
            env.processes = plane.processes;
            env.kubeconfig = Some(plane.kubeconfig.clone());
            env.api_url = Some(plane.url);
            let client = controlplane::client(&plane.kubeconfig).await?;
            wait_ready(&client, &mut env.processes).await?;
            env.client = Some(client);
        }
        if self.node {
            env.start_node(&node_tokens, !self.irsa).await?;
        }
        if self.irsa {
            let moto = env.moto.as_ref().context("IRSA needs moto")?;
            env.pod_identity = Some(
                crate::pod_identity::PodIdentityWebhook::start(
                    &dir,
                    &env.ca,
                    env.client(),
                    crate::moto::REGION,
                    &moto.endpoint,
                )
                .await?,
            );
        }
        Ok(())
    }
}

impl TestEnv {
    /// The images registry (sandbox and privateer images pushed), then the node, wired to pull
    /// `docker.io` from the source registry, the ECR host from the target (with the node's own
    /// credentials, as an EKS node's) and `registry.k8s.io` from the images registry; with
    /// `imds`, the instance metadata Pods reach.
    async fn start_node(&mut self, tokens: &[String; 3], imds: bool) -> anyhow::Result<()> {
        if imds {
            self.imds = Some(crate::imds::Imds::start(crate::node::network::BRIDGE)?);
        }
        let images = Registry::start_at("images", &self.dir, None, NODE_IP)?;
        let pusher = crate::images::Pusher::new(crate::registry::oci_client(), images.auth());
        let pause = crate::product_image::pause(&tools::pause_program())?;
        pusher
            .push_image(&images.host, "pause", "3.10", &pause)
            .await?;
        let (privateer, tag) =
            crate::product_image::read_layout(&crate::product_image::layout_dir())?;
        pusher
            .push_image(&images.host, "privateer", &tag, &privateer)
            .await?;
        self.privateer_image = Some(format!("{}/privateer:{tag}", images.host));
        let source = self
            .source
            .as_ref()
            .context("the node needs the source registry")?;
        let target = self
            .target
            .as_ref()
            .context("the node needs the target registry")?;
        let mirror = |host: &str, registry: &Registry, node_credentials: bool| Mirror {
            host: host.to_owned(),
            endpoint: registry.host.clone(),
            credentials: node_credentials
                .then(|| registry.credentials.clone())
                .flatten(),
        };
        let mirrors = vec![
            mirror("docker.io", source, false),
            mirror(&source.host, source, false),
            mirror(&Self::target_registry_host(), target, true),
            mirror(&target.host, target, false),
            mirror("registry.k8s.io", &images, false),
            mirror(&images.host, &images, false),
        ];
        self.images = Some(images);
        let api_url = self
            .api_url
            .clone()
            .context("the node needs the control plane")?;
        let node = Node::start(
            NodeSpec {
                bin: &self.bin_dir,
                dir: &self.dir,
                ca: &self.ca,
                api_url: &api_url,
                tokens: [&tokens[0], &tokens[1], &tokens[2]],
                mirrors,
            },
            &self.client(),
        )
        .await?;
        self.node = Some(node);
        Ok(())
    }
}

impl TestEnv {
    /// Pushes a runnable busybox image (named `repository:tag` inside, default command `cmd`)
    /// to the source registry as `docker.io/<repository>:<tag>`; returns its digest.
    pub async fn push_runnable(
        &self,
        repository: &str,
        tag: &str,
        cmd: &[&str],
    ) -> anyhow::Result<String> {
        let source = self.source.as_ref().context("no source registry")?;
        crate::images::Pusher::new(crate::registry::oci_client(), source.auth())
            .push_runnable(&source.host, repository, tag, cmd)
            .await
    }
}

/// Until Pod `name` reaches `phase` (60 s); the error carries its last status.
pub async fn wait_pod_phase(
    pods: &kube::Api<k8s_openapi::api::core::v1::Pod>,
    name: &str,
    phase: &str,
) -> anyhow::Result<k8s_openapi::api::core::v1::Pod> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let pod = pods.get(name).await?;
        if pod.status.as_ref().and_then(|s| s.phase.as_deref()) == Some(phase) {
            return Ok(pod);
        }
        if Instant::now() > deadline {
            bail!("pod {name} not {phase} in 60 s: {:?}", pod.status);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Until `/readyz` answers ok and the `default` namespace has its service account (the
/// controllers are running), checking that no process died meanwhile.
async fn wait_ready(client: &kube::Client, processes: &mut [Managed]) -> anyhow::Result<()> {
    use k8s_openapi::api::core::v1::ServiceAccount;
    let deadline = Instant::now() + Duration::from_secs(90);
    let accounts: kube::Api<ServiceAccount> = kube::Api::namespaced(client.clone(), "default");
    loop {
        let ready = client
            .request_text(http::Request::get("/readyz").body(Vec::new())?)
            .await
            .is_ok_and(|body| body.trim() == "ok");
        if ready && accounts.get_opt("default").await.ok().flatten().is_some() {
            return Ok(());
        }
        for process in processes.iter_mut() {
            process.check_alive()?;
        }
        if Instant::now() > deadline {
            bail!("control plane not ready after 90s; see the logs in the environment directory");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
