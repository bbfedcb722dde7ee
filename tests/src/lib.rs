//! privateer's local environment for tests, benchmarks and the demo: etcd, kube-apiserver and
//! kube-controller-manager built from the Go module proxy, a node agent standing in for the
//! kubelet, `docker-registry` instances and `moto_server` as the ECR API. `TestEnv` starts what
//! a test needs and stops it, by PID, when dropped.

pub mod controlplane;
pub mod ecr_proxy;
pub mod env;
pub mod hostile;
pub mod https;
pub mod images;
pub mod moto;
pub mod node_agent;
pub mod pki;
pub mod process;
pub mod registry;
pub mod tools;

pub use env::{Builder, TestEnv};
