//! What the report reads from the API server: Pods (one namespace or all), every ImageMirror,
//! and the namespaces labelled `privateer.dev/skip=true`. Lists are paged, so a large
//! cluster is read in bounded pieces.

use std::fmt::Debug;

use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::api::{Api, ListParams};
use kube::{Client, Resource};
use privateer_api::{ImageMirror, names};
use serde::de::DeserializeOwned;

use crate::Inputs;

/// Objects per list request.
const PAGE: u32 = 500;

/// Read the report's inputs; `namespace`: only that namespace's Pods.
pub async fn read(client: &Client, namespace: Option<&str>) -> Result<Inputs, kube::Error> {
    let pods: Api<Pod> = match namespace {
        Some(namespace) => Api::namespaced(client.clone(), namespace),
        None => Api::all(client.clone()),
    };
    let skip = format!("{}=true", names::SKIP);
    let namespaces: Api<Namespace> = Api::all(client.clone());
    Ok(Inputs {
        pods: list_all(&pods, ListParams::default()).await?,
        mirrors: list_all(
            &Api::<ImageMirror>::all(client.clone()),
            ListParams::default(),
        )
        .await?,
        skipped_namespaces: list_all(&namespaces, ListParams::default().labels(&skip))
            .await?
            .into_iter()
            .filter_map(|ns| ns.metadata.name)
            .collect(),
    })
}

async fn list_all<K>(api: &Api<K>, params: ListParams) -> Result<Vec<K>, kube::Error>
where
    K: Resource + Clone + DeserializeOwned + Debug,
{
    let mut params = params.limit(PAGE);
    let mut items = Vec::new();
    loop {
        let page = api.list(&params).await?;
        items.extend(page.items);
        match page.metadata.continue_ {
            Some(token) if !token.is_empty() => params = params.continue_token(&token),
            _ => return Ok(items),
        }
    }
}
