//! A kubelet stand-in for one node, so the real Job controller sees copy Jobs finish.
//!
//! It registers a Ready `Node`, binds unscheduled Pods that carry no scheduling gates to it,
//! runs the Pods bound to it by executing their command on this machine — the `privateer`
//! binary only; any other program is refused with a Failed pod that says so (a workload's pod
//! stays unscheduled instead, so its ReplicaSet does not replace it in a loop) — and writes the
//! Pod status (phase, container state, exit code, termination message). Deleted pods have their
//! process killed and are then removed, as a kubelet confirms a deletion.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, bail};
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Container, Node, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::watcher;
use serde_json::json;
use tokio::sync::{Mutex, oneshot};

/// The environment variable under which the agent tells a container where to write its
/// termination message (a real kubelet mounts a file at `terminationMessagePath`).
pub const TERMINATION_MESSAGE_ENV: &str = "PRIVATEER_TERMINATION_MESSAGE_PATH";
/// Kubelet's limit on a termination message.
const MESSAGE_MAX: usize = 4096;

/// Pods a controller replaces when they fail (ReplicaSet, StatefulSet, DaemonSet); Jobs count
/// failures and are left to fail.
fn owned_by_workload(pod: &Pod) -> bool {
    pod.metadata
        .owner_references
        .iter()
        .flatten()
        .any(|o| matches!(o.kind.as_str(), "ReplicaSet" | "StatefulSet" | "DaemonSet"))
}

/// Stops the agent (and every process it runs) when dropped.
pub struct NodeAgentHandle {
    tasks: Vec<tokio::task::JoinHandle<()>>,
    pub node_name: String,
}

impl Drop for NodeAgentHandle {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

struct Agent {
    client: kube::Client,
    node: String,
    privateer: PathBuf,
    work_dir: PathBuf,
    /// Set in every container, as a pod identity webhook would (AWS credentials for moto).
    injected_env: Vec<(String, String)>,
    /// Pods started, by UID: sending on the channel kills the process.
    running: Mutex<HashMap<String, Option<oneshot::Sender<()>>>>,
}

/// Registers the node and starts watching pods.
pub async fn start(
    client: kube::Client,
    node: &str,
    privateer: &Path,
    work_dir: &Path,
    injected_env: Vec<(String, String)>,
) -> anyhow::Result<NodeAgentHandle> {
    std::fs::create_dir_all(work_dir)?;
    register_node(&client, node).await?;
    let agent = Arc::new(Agent {
        client,
        node: node.to_owned(),
        privateer: privateer.to_owned(),
        work_dir: work_dir.to_owned(),
        injected_env,
        running: Mutex::new(HashMap::new()),
    });
    let watch = {
        let agent = agent.clone();
        tokio::spawn(async move {
            let pods: Api<Pod> = Api::all(agent.client.clone());
            let mut events = watcher(pods, watcher::Config::default()).boxed();
            while let Some(event) = events.next().await {
                match event {
                    Ok(watcher::Event::Apply(pod) | watcher::Event::InitApply(pod)) => {
                        if let Err(e) = agent.clone().handle(pod).await {
                            tracing::warn!("node agent: {e:#}");
                        }
                    }
                    Ok(_) => {}
                    Err(e) => {
                        tracing::debug!("node agent watch: {e}");
                        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                    }
                }
            }
        })
    };
    let heartbeat = {
        let agent = agent.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(std::time::Duration::from_secs(10)).await;
                let _ = set_node_ready(&agent.client, &agent.node).await;
            }
        })
    };
    Ok(NodeAgentHandle {
        tasks: vec![watch, heartbeat],
        node_name: node.to_owned(),
    })
}

async fn register_node(client: &kube::Client, name: &str) -> anyhow::Result<()> {
    let nodes: Api<Node> = Api::all(client.clone());
    let node: Node = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name, "kubernetes.io/os": "linux"}},
    }))?;
    match nodes.create(&PostParams::default(), &node).await {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 409 => {}
        Err(e) => return Err(e).context("register node"),
    }
    set_node_ready(client, name).await
}

async fn set_node_ready(client: &kube::Client, name: &str) -> anyhow::Result<()> {
    let nodes: Api<Node> = Api::all(client.clone());
    let now = Time(k8s_openapi::jiff::Timestamp::now());
    let resources = json!({"cpu": "2", "memory": "24Gi", "pods": "110"});
    let status = json!({"status": {
        "capacity": resources, "allocatable": resources,
        "conditions": [{"type": "Ready", "status": "True", "reason": "NodeAgentReady",
            "message": "privateer test node agent", "lastHeartbeatTime": now, "lastTransitionTime": now}],
        "addresses": [{"type": "InternalIP", "address": "127.0.0.1"}, {"type": "Hostname", "address": name}],
        "nodeInfo": {"architecture": std::env::consts::ARCH, "operatingSystem": "linux",
            "kubeletVersion": crate::tools::kubernetes_version(), "kubeProxyVersion": "", "containerRuntimeVersion": "privateer-node-agent://1",
            "bootID": "", "kernelVersion": "", "machineID": "", "osImage": "", "systemUUID": ""},
    }});
    nodes
        .patch_status(name, &PatchParams::default(), &Patch::Merge(status))
        .await
        .context("node status")?;
    Ok(())
}

impl Agent {
    async fn handle(self: Arc<Self>, pod: Pod) -> anyhow::Result<()> {
        let spec = pod.spec.clone().unwrap_or_default();
        let name = pod.metadata.name.clone().unwrap_or_default();
        let namespace = pod.metadata.namespace.clone().unwrap_or_default();
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), &namespace);

        match spec.node_name.as_deref() {
            None => {
                let gated = spec
                    .scheduling_gates
                    .as_ref()
                    .is_some_and(|g| !g.is_empty());
                let init = spec.init_containers.clone().unwrap_or_default();
                if let Err(reason) = self.check_runnable(&init, &spec.containers)
                    && owned_by_workload(&pod)
                {
                    // A failed Pod of a ReplicaSet is replaced at once, and again: leave it
                    // unscheduled instead, saying why, as a scheduler with no fitting node does.
                    if !gated {
                        let status = json!({"status": {"conditions": [{"type": "PodScheduled",
                            "status": "False", "reason": "Unschedulable",
                            "message": format!("{reason}; pods of workloads stay unscheduled here")}]}});
                        let _ = pods
                            .patch_status(&name, &PatchParams::default(), &Patch::Merge(status))
                            .await;
                    }
                    return Ok(());
                }
                if !gated && pod.metadata.deletion_timestamp.is_none() {
                    let binding = json!({"apiVersion": "v1", "kind": "Binding",
                        "metadata": {"name": name, "namespace": namespace},
                        "target": {"apiVersion": "v1", "kind": "Node", "name": self.node}});
                    let result: Result<serde_json::Value, _> = pods
                        .create_subresource("binding", &name, &PostParams::default(), &binding)
                        .await;
                    if let Err(e) = result {
                        tracing::debug!("bind {namespace}/{name}: {e}");
                    }
                }
                return Ok(());
            }
            Some(node) if node != self.node => return Ok(()),
            Some(_) => {}
        }

        if pod.metadata.deletion_timestamp.is_some() {
            if let Some(Some(kill)) = self.running.lock().await.get_mut(&uid).map(Option::take) {
                let _ = kill.send(());
            }
            // The process is gone (or never ran): confirm the deletion as a kubelet does.
            let params = DeleteParams {
                grace_period_seconds: Some(0),
                ..DeleteParams::default()
            };
            let _ = pods.delete(&name, &params).await;
            self.running.lock().await.remove(&uid);
            return Ok(());
        }

        let phase = pod
            .status
            .as_ref()
            .and_then(|s| s.phase.clone())
            .unwrap_or_default();
        if phase == "Succeeded" || phase == "Failed" {
            return Ok(());
        }
        let (kill_tx, kill_rx) = oneshot::channel();
        {
            let mut running = self.running.lock().await;
            if running.contains_key(&uid) {
                return Ok(());
            }
            running.insert(uid.clone(), Some(kill_tx));
        }
        let agent = self.clone();
        tokio::spawn(async move {
            if let Err(e) = agent.run(&pods, &pod, kill_rx).await {
                tracing::warn!("node agent: pod {namespace}/{name}: {e:#}");
            }
        });
        Ok(())
    }

    /// Runs init containers in order, then the one main container, writing status as it goes.
    async fn run(
        &self,
        pods: &Api<Pod>,
        pod: &Pod,
        mut kill: oneshot::Receiver<()>,
    ) -> anyhow::Result<()> {
        let name = pod.metadata.name.clone().unwrap_or_default();
        let spec = pod.spec.clone().unwrap_or_default();
        if let Err(reason) = self.check_runnable(
            &spec.init_containers.clone().unwrap_or_default(),
            &spec.containers,
        ) {
            return self.refuse(pods, &name, &spec.containers, &reason).await;
        }
        let started = Time(k8s_openapi::jiff::Timestamp::now());
        let main = &spec.containers[0];
        self.patch(pods, &name, json!({"status": {
            "phase": "Running", "hostIP": "127.0.0.1", "podIP": "127.0.0.1", "startTime": started,
            "conditions": [{"type": "PodScheduled", "status": "True"}, {"type": "Initialized", "status": "True"},
                {"type": "Ready", "status": "True"}, {"type": "ContainersReady", "status": "True"}],
            "containerStatuses": [{"name": main.name, "image": main.image, "imageID": "", "ready": true,
                "restartCount": 0, "started": true, "state": {"running": {"startedAt": started}}}],
        }})).await?;

        let mut containers: Vec<&Container> = spec.init_containers.iter().flatten().collect();
        containers.push(main);
        let mut outcome = (0, String::new());
        for container in containers {
            outcome = self.exec(pod, container, &mut kill).await?;
            if outcome.0 != 0 {
                break;
            }
        }
        let (code, message) = outcome;
        let finished = Time(k8s_openapi::jiff::Timestamp::now());
        let phase = if code == 0 { "Succeeded" } else { "Failed" };
        let reason = if code == 0 { "Completed" } else { "Error" };
        self.patch(pods, &name, json!({"status": {
            "phase": phase,
            "conditions": [{"type": "PodScheduled", "status": "True"}, {"type": "Initialized", "status": "True"},
                {"type": "Ready", "status": "False", "reason": "PodCompleted"}, {"type": "ContainersReady", "status": "False", "reason": "PodCompleted"}],
            "containerStatuses": [{"name": main.name, "image": main.image, "imageID": "", "ready": false,
                "restartCount": 0, "started": false,
                "state": {"terminated": {"exitCode": code, "reason": reason, "message": message,
                    "startedAt": started, "finishedAt": finished}}}],
        }})).await
    }

    fn check_runnable(&self, init: &[Container], main: &[Container]) -> Result<(), String> {
        if main.len() != 1 {
            return Err(format!(
                "the node agent runs pods with one container, this one has {}",
                main.len()
            ));
        }
        for c in init.iter().chain(main) {
            let program = c
                .command
                .as_ref()
                .and_then(|cmd| cmd.first())
                .cloned()
                .unwrap_or_default();
            if Path::new(&program).file_name().and_then(|f| f.to_str()) != Some("privateer") {
                return Err(format!(
                    "the test node agent runs only the privateer binary; container {:?} (image {}) runs {:?}",
                    c.name,
                    c.image.clone().unwrap_or_default(),
                    program
                ));
            }
            if c.env.iter().flatten().any(|e| e.value_from.is_some()) {
                return Err(format!(
                    "container {:?}: env valueFrom is not supported by the node agent",
                    c.name
                ));
            }
        }
        Ok(())
    }

    /// A pod the agent cannot run fails visibly, with the reason in its status.
    async fn refuse(
        &self,
        pods: &Api<Pod>,
        name: &str,
        containers: &[Container],
        reason: &str,
    ) -> anyhow::Result<()> {
        let now = Time(k8s_openapi::jiff::Timestamp::now());
        let statuses: Vec<_> = containers.iter().map(|c| json!({"name": c.name, "image": c.image, "imageID": "",
            "ready": false, "restartCount": 0,
            "state": {"terminated": {"exitCode": 128, "reason": "UnsupportedByNodeAgent", "message": reason,
                "startedAt": now, "finishedAt": now}}})).collect();
        self.patch(
            pods,
            name,
            json!({"status": {"phase": "Failed", "reason": "UnsupportedByNodeAgent",
            "message": reason, "containerStatuses": statuses}}),
        )
        .await
    }

    async fn exec(
        &self,
        pod: &Pod,
        c: &Container,
        kill: &mut oneshot::Receiver<()>,
    ) -> anyhow::Result<(i32, String)> {
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        let dir = self.work_dir.join(&uid);
        std::fs::create_dir_all(&dir)?;
        let log = dir.join(format!("{}.log", c.name));
        let message_file = dir.join(format!("{}.termination-log", c.name));
        std::fs::write(&message_file, "")?;
        let mut args: Vec<String> = c.command.iter().flatten().skip(1).cloned().collect();
        args.extend(c.args.iter().flatten().cloned());
        let out = std::fs::File::create(&log)?;
        let mut command = tokio::process::Command::new(&self.privateer);
        command
            .args(&args)
            .env(TERMINATION_MESSAGE_ENV, &message_file)
            .stdin(std::process::Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .kill_on_drop(true);
        if let Some(dir) = &c.working_dir {
            command.current_dir(dir);
        }
        command.envs(self.injected_env.iter().map(|(k, v)| (k, v)));
        for e in c.env.iter().flatten() {
            command.env(&e.name, e.value.clone().unwrap_or_default());
        }
        let mut child = command
            .spawn()
            .with_context(|| format!("start {}", self.privateer.display()))?;
        let status = tokio::select! {
            status = child.wait() => status?,
            _ = kill => {
                child.kill().await.ok();
                bail!("killed: pod deleted");
            }
        };
        let code = status.code().unwrap_or(137);
        let mut message = std::fs::read_to_string(&message_file).unwrap_or_default();
        let fallback = c.termination_message_policy.as_deref() == Some("FallbackToLogsOnError");
        if message.is_empty() && fallback && code != 0 {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            message = lines[lines.len().saturating_sub(80)..].join("\n");
        }
        if message.len() > MESSAGE_MAX {
            let mut cut = message.len() - MESSAGE_MAX;
            while !message.is_char_boundary(cut) {
                cut += 1;
            }
            message = message[cut..].to_owned();
        }
        Ok((code, message))
    }

    async fn patch(
        &self,
        pods: &Api<Pod>,
        name: &str,
        status: serde_json::Value,
    ) -> anyhow::Result<()> {
        pods.patch_status(name, &PatchParams::default(), &Patch::Merge(status))
            .await
            .context("pod status")?;
        Ok(())
    }
}
