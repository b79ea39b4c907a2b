//! The caBundle controller's loop: watches Mutating- and
//! ValidatingWebhookConfigurations, and whenever one of the named configurations
//! appears or changes, or the CA's roots change, patches every entry whose
//! `clientConfig.caBundle` is not the CA's trust bundle (a JSON merge patch
//! conditional on the `resourceVersion` read; 409 means read again). A failed
//! patch is retried after [`RETRY_AFTER`](super::RETRY_AFTER).

use std::collections::BTreeSet;

use futures::{StreamExt, stream::BoxStream};
use kube::{
    Api, Client, ResourceExt,
    api::{ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams},
    runtime::{WatchStreamExt, watcher},
};
use mesh_kube::request_error;
use serde_json::Value;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{
    CONFLICT_RETRIES, ControllerContext, ControllerError, RETRY_AFTER, ROOT_CHECK_EVERY,
    cabundle::{encode_bundle, patch, stale_entries},
    current_roots,
};

const CONTROLLER: &str = "webhooks";
const GROUP: &str = "admissionregistration.k8s.io";

/// The two kinds of webhook configuration: kind and plural.
pub const KINDS: [(&str, &str); 2] = [
    (
        "MutatingWebhookConfiguration",
        "mutatingwebhookconfigurations",
    ),
    (
        "ValidatingWebhookConfiguration",
        "validatingwebhookconfigurations",
    ),
];

/// A configuration: index into [`KINDS`], and name.
type Key = (usize, String);

/// A watch event of one of the [`KINDS`].
type KindEvent = (usize, Result<watcher::Event<DynamicObject>, watcher::Error>);

fn api(client: &Client, kind: usize) -> Api<DynamicObject> {
    let (k, plural) = KINDS[kind];
    let resource =
        ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(GROUP, "v1", k), plural);
    Api::all_with(client.clone(), &resource)
}

/// Runs the controller for the configurations `names` until `token` is cancelled.
pub async fn run(
    client: Client,
    context: ControllerContext,
    names: Vec<String>,
    token: CancellationToken,
) {
    let wanted: BTreeSet<String> = names.into_iter().collect();
    let streams: Vec<BoxStream<'static, KindEvent>> = (0..KINDS.len())
        .map(|kind| {
            watcher(api(&client, kind), watcher::Config::default())
                .default_backoff()
                .map(move |e| (kind, e))
                .boxed()
        })
        .collect();
    let mut events = futures::stream::select_all(streams);
    let mut roots = current_roots(&context.authority);
    let mut tick = tokio::time::interval(ROOT_CHECK_EVERY);
    let mut failed: BTreeSet<Key> = BTreeSet::new();
    let mut retry_at = Instant::now();
    let mut last_error: Option<String> = None;
    loop {
        let mut todo: Vec<(Key, Option<Value>)> = Vec::new();
        tokio::select! {
            () = token.cancelled() => return,
            event = events.next() => match event {
                None => return,
                Some((kind, Ok(watcher::Event::Apply(o) | watcher::Event::InitApply(o)))) => {
                    if wanted.contains(&o.name_any()) {
                        let value = serde_json::to_value(&o).ok();
                        todo.push(((kind, o.name_any()), value));
                    }
                }
                Some((_, Ok(_))) => {}
                Some((_, Err(e))) => {
                    let text = mesh_kube::client::error_chain(&e);
                    if last_error.as_deref() != Some(text.as_str()) {
                        tracing::warn!(error = %text, "caBundle controller: watch failed; retrying");
                    }
                    last_error = Some(text);
                }
            },
            _ = tick.tick() => {
                let now = current_roots(&context.authority);
                if now.is_some() && now != roots {
                    tracing::info!("the CA's roots changed: patching the webhook configurations");
                    roots = now;
                    for kind in 0..KINDS.len() {
                        todo.extend(wanted.iter().map(|n| ((kind, n.clone()), None)));
                    }
                }
                if !failed.is_empty() && Instant::now() >= retry_at {
                    todo.extend(std::mem::take(&mut failed).into_iter().map(|k| (k, None)));
                }
            }
        }
        let Some(roots) = &roots else { continue };
        let bundle = encode_bundle(roots);
        for (key, seen) in todo {
            if let Err(error) = reconcile(&client, &context, &key, seen, &bundle).await {
                context.metrics.failed(CONTROLLER);
                tracing::warn!(
                    kind = KINDS[key.0].0,
                    name = %key.1,
                    error = %error,
                    "cannot patch the webhook configuration's caBundle; retrying"
                );
                failed.insert(key);
                retry_at = Instant::now() + RETRY_AFTER;
            }
        }
    }
}

/// Patches one configuration if any entry's caBundle differs from `bundle`.
/// `seen` is the object from the watch; on a conflict (or without it) the
/// configuration is read from the API server.
async fn reconcile(
    client: &Client,
    context: &ControllerContext,
    (kind, name): &Key,
    mut seen: Option<Value>,
    bundle: &str,
) -> Result<(), ControllerError> {
    let (kind_name, plural) = KINDS[*kind];
    let api = api(client, *kind);
    for _ in 0..CONFLICT_RETRIES {
        let current = match seen.take() {
            Some(v) => v,
            None => match api
                .get_opt(name)
                .await
                .map_err(|e| request_error(e, "get", plural, None))?
            {
                // Not installed (yet): its creation will be seen by the watch.
                None => return Ok(()),
                Some(o) => serde_json::to_value(&o).unwrap_or(Value::Null),
            },
        };
        let Some(body) = patch(&current, bundle) else {
            return Ok(());
        };
        let stale = stale_entries(&current, bundle);
        match api
            .patch(name, &PatchParams::default(), &Patch::Merge(&body))
            .await
        {
            Ok(_) => {
                context.metrics.wrote(CONTROLLER, "patch");
                tracing::info!(
                    kind = kind_name,
                    %name,
                    webhooks = ?stale,
                    "set the webhooks' caBundle to the CA's roots"
                );
                return Ok(());
            }
            Err(kube::Error::Api(status)) if status.code == 409 => {
                tracing::debug!(kind = kind_name, %name, "conflict on patch; reading again");
            }
            Err(kube::Error::Api(status)) if status.code == 404 => return Ok(()),
            Err(e) => return Err(request_error(e, "patch", plural, None).into()),
        }
    }
    Err(ControllerError::Conflicts(format!("{kind_name} {name}")))
}
