//! privateer's local environment for tests, benchmarks and the demo: etcd, kube-apiserver and
//! kube-controller-manager built from the Go module proxy, one real node (containerd, runc and
//! CNI from Debian; kubelet, kube-proxy and kube-scheduler from the same Kubernetes module),
//! `docker-registry` instances and `moto_server` as the ECR API. `TestEnv` starts what a test
//! needs and stops it, by PID, when dropped.

pub mod controlplane;
pub mod ecr_proxy;
pub mod env;
pub mod hostile;
pub mod https;
pub mod images;
pub mod imds;
pub mod moto;
pub mod node;
pub mod operator;
pub mod pki;
pub mod pod_identity;
pub mod process;
pub mod product_image;
pub mod registry;
pub mod rootfs;
pub mod throttle;
pub mod tools;

pub use env::{Builder, TestEnv};
