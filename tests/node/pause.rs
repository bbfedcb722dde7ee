//! The node's sandbox ("pause") program, as Kubernetes' build/pause is: it holds a Pod's
//! namespaces and does nothing else. Built statically by tests/setup.sh (rustc, crt-static),
//! so its image needs no libraries. containerd stops sandboxes with SIGKILL.
fn main() {
    loop {
        std::thread::park();
    }
}
