//! Any AdmissionReview body: decoding to a Pod and planning its mutation never panics, and
//! the plan over its own output plans nothing more (reinvocation is a no-op).
#![no_main]

use k8s_openapi::api::core::v1::Pod;
use kube::core::admission::AdmissionReview;
use libfuzzer_sys::fuzz_target;
use privateer_api::Config;
use privateer_api::config::RewritePolicy;
use privateer_image::TargetNaming;
use privateer_webhook::mutate::{PodRequest, Surroundings, plan_pod};

const TARGET: &str = "123456789012.dkr.ecr.eu-west-1.amazonaws.com";

fuzz_target!(|data: &[u8]| {
    let Ok(review) = serde_json::from_slice::<AdmissionReview<Pod>>(data) else {
        return;
    };
    let Some(pod) = review.request.and_then(|r| r.object) else {
        return;
    };
    let mut config = Config::default();
    config.target.registry = TARGET.into();
    let naming = TargetNaming::new(TARGET, "mirror").expect("valid naming");
    let around = Surroundings {
        config: &config,
        naming: Some(&naming),
        own_images: &[],
        namespace_skipped: false,
    };
    for policy in [
        RewritePolicy::Gate,
        RewritePolicy::Always,
        RewritePolicy::WhenReady,
    ] {
        let plan = plan_pod(PodRequest::Create(&pod), &around, &|_| None, policy);
        if plan.patch.is_empty() {
            continue;
        }
        // The API server applies the patch to the Pod it sent: it must apply, and planning
        // the patched Pod again (a reinvocation) must add nothing.
        let mut object = serde_json::to_value(&pod).expect("a Pod serializes");
        json_patch::patch(&mut object, &plan.patch).expect("the patch applies to the Pod");
        let Ok(patched) = serde_json::from_value::<Pod>(object) else {
            return;
        };
        let again = plan_pod(PodRequest::Create(&patched), &around, &|_| None, policy);
        assert!(
            again.patch.is_empty(),
            "reinvocation patched again: {:?}",
            again.patch
        );
    }
});
