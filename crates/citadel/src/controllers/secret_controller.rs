//! The Secret controller's loop: watches ServiceAccounts and citadel's own Secrets
//! (reflector caches, per namespace with `--secret-namespaces`), and reconciles
//! one service account at a time:
//!
//! | found | done |
//! | --- | --- |
//! | an account without its Secret | create it (a new key and certificate) |
//! | a Secret past its renewal point, unusable, naming another identity, or with an old `root-cert.pem` | rewrite it in place (update carrying the `resourceVersion` read; 409 means read again and decide anew) |
//! | a Secret whose account is gone | delete it (its ownerReference would let the API server's collector do it too) |
//! | a good Secret | nothing; looked at again at its renewal point |
//!
//! Decisions are taken on the cache; before writing, the Secret is read again so a
//! cache that lags a write of ours does not cause a second one. Every account is
//! looked at after each (re)list, when the CA's roots change, at the earliest
//! renewal point and at least every resync period; a failure is retried after
//! [`RETRY_AFTER`](super::RETRY_AFTER).

use std::{
    collections::{BTreeSet, HashSet},
    time::SystemTime,
};

use futures::{StreamExt, stream::BoxStream};
use k8s_openapi::api::core::v1::{Secret, ServiceAccount};
use kube::{
    Api, Client, ResourceExt,
    api::{DeleteParams, PostParams},
    runtime::{
        WatchStreamExt,
        reflector::{self, ObjectRef, Store},
        watcher,
    },
};
use mesh_kube::request_error;
use mesh_tls::SpiffeId;
use time::OffsetDateTime;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{
    CONFLICT_RETRIES, ControllerContext, ControllerError, RETRY_AFTER, ROOT_CHECK_EVERY,
    SecretsConfig, current_roots,
    secret::{
        MANAGED_BY, MANAGED_BY_LABEL, SECRET_TYPE, Verdict, assess, build_secret, issue,
        renew_point, secret_name, service_account_of,
    },
};
use crate::agent::schedule::wait_until;

const CONTROLLER: &str = "secrets";

/// A service account: namespace and name.
type Key = (String, String);

/// What one watch event means to the loop.
enum Update {
    /// These accounts may need work.
    Keys(Vec<Key>),
    /// Watch `usize` has completed a list.
    Listed(usize),
    /// Watch `usize` failed (it retries with backoff).
    Failed(usize, String),
}

struct Controller {
    client: Client,
    context: ControllerContext,
    config: SecretsConfig,
    accounts: Vec<Store<ServiceAccount>>,
    secrets: Vec<Store<Secret>>,
}

/// Runs the Secret controller until `token` is cancelled.
pub async fn run(
    client: Client,
    context: ControllerContext,
    config: SecretsConfig,
    token: CancellationToken,
) {
    let scopes: Vec<Option<String>> = if config.namespaces.is_empty() {
        vec![None]
    } else {
        config.namespaces.iter().cloned().map(Some).collect()
    };
    let mut streams: Vec<BoxStream<'static, Update>> = Vec::new();
    let mut accounts = Vec::new();
    let mut secrets = Vec::new();
    for scope in &scopes {
        let (store, writer) = reflector::store();
        accounts.push(store);
        let id = streams.len();
        let accounts_api: Api<ServiceAccount> = api(&client, scope.as_deref());
        let stream =
            reflector::reflector(writer, watcher(accounts_api, watcher::Config::default()))
                .default_backoff()
                .map(move |e| to_update(id, e, account_key));
        streams.push(stream.boxed());

        let (store, writer) = reflector::store();
        secrets.push(store);
        let id = streams.len();
        let api: Api<Secret> = api(&client, scope.as_deref());
        let selector = format!("{MANAGED_BY_LABEL}={MANAGED_BY}");
        let stream = reflector::reflector(
            writer,
            watcher(api, watcher::Config::default().labels(&selector)),
        )
        .default_backoff()
        .map(move |e| to_update(id, e, secret_key));
        streams.push(stream.boxed());
    }
    let total = streams.len();
    let controller = Controller {
        client,
        context,
        config,
        accounts,
        secrets,
    };
    controller.run(streams, total, token).await;
}

fn api<K>(client: &Client, namespace: Option<&str>) -> Api<K>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>,
    K::DynamicType: Default,
{
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

fn account_key(sa: &ServiceAccount) -> Option<Key> {
    Some((sa.namespace()?, sa.name_any()))
}

fn secret_key(secret: &Secret) -> Option<Key> {
    let name = secret.name_any();
    Some((secret.namespace()?, service_account_of(&name)?.to_string()))
}

fn to_update<K>(
    id: usize,
    event: Result<watcher::Event<K>, watcher::Error>,
    key: fn(&K) -> Option<Key>,
) -> Update {
    match event {
        Ok(watcher::Event::Apply(o) | watcher::Event::Delete(o) | watcher::Event::InitApply(o)) => {
            Update::Keys(key(&o).into_iter().collect())
        }
        Ok(watcher::Event::Init) => Update::Keys(Vec::new()),
        Ok(watcher::Event::InitDone) => Update::Listed(id),
        Err(e) => Update::Failed(id, mesh_kube::client::error_chain(&e)),
    }
}

/// `at` (wall clock) as a tokio instant, no sooner than the schedule's floor.
fn instant_at(at: SystemTime) -> Instant {
    Instant::now() + wait_until(at, SystemTime::now())
}

impl Controller {
    async fn run(
        &self,
        streams: Vec<BoxStream<'static, Update>>,
        total: usize,
        token: CancellationToken,
    ) {
        let mut events = futures::stream::select_all(streams);
        let mut listed = HashSet::new();
        let mut failing: Vec<Option<String>> = vec![None; total];
        let mut dirty: BTreeSet<Key> = BTreeSet::new();
        let mut full = false;
        let mut next_full = Instant::now() + self.config.resync;
        let mut roots = current_roots(&self.context.authority);
        let mut tick = tokio::time::interval(ROOT_CHECK_EVERY);
        loop {
            tokio::select! {
                () = token.cancelled() => return,
                update = events.next() => match update {
                    None => return,
                    Some(Update::Keys(keys)) => dirty.extend(keys),
                    Some(Update::Listed(id)) => {
                        listed.insert(id);
                        failing[id] = None;
                        // A list may hide deletions made while the watch was down.
                        full = true;
                    }
                    Some(Update::Failed(id, error)) => {
                        if failing[id].as_deref() != Some(error.as_str()) {
                            tracing::warn!(%error, "Secret controller: watch failed; retrying");
                        }
                        failing[id] = Some(error);
                    }
                },
                () = tokio::time::sleep_until(next_full) => full = true,
                _ = tick.tick() => {
                    let now = current_roots(&self.context.authority);
                    if now.is_some() && now != roots {
                        tracing::info!("the CA's roots changed: renewing every Secret");
                        roots = now;
                        full = true;
                    }
                }
            }
            if listed.len() < total {
                continue;
            }
            if full {
                full = false;
                next_full = Instant::now() + self.config.resync;
                dirty.extend(self.all_keys());
            }
            while let Some(key) = dirty.pop_first() {
                if token.is_cancelled() {
                    return;
                }
                match self.reconcile(&key).await {
                    Ok(Some(renew_at)) => next_full = next_full.min(instant_at(renew_at)),
                    Ok(None) => {}
                    Err(error) => {
                        self.context.metrics.failed(CONTROLLER);
                        tracing::warn!(
                            namespace = %key.0,
                            service_account = %key.1,
                            error = %error,
                            "cannot reconcile the service account's Secret; retrying"
                        );
                        next_full = next_full.min(Instant::now() + RETRY_AFTER);
                    }
                }
            }
        }
    }

    fn all_keys(&self) -> BTreeSet<Key> {
        let accounts = self
            .accounts
            .iter()
            .flat_map(|s| s.state())
            .filter_map(|a| account_key(&a));
        let secrets = self
            .secrets
            .iter()
            .flat_map(|s| s.state())
            .filter_map(|s| secret_key(&s));
        accounts.chain(secrets).collect()
    }

    fn account(&self, (ns, name): &Key) -> Option<ServiceAccount> {
        let r = ObjectRef::new(name).within(ns);
        self.accounts
            .iter()
            .find_map(|s| s.get(&r))
            .map(|a| (*a).clone())
    }

    fn cached_secret(&self, (ns, sa): &Key) -> Option<Secret> {
        let r = ObjectRef::new(&secret_name(sa)).within(ns);
        self.secrets
            .iter()
            .find_map(|s| s.get(&r))
            .map(|s| (*s).clone())
    }

    /// Brings one account's Secret in line; returns its next renewal point.
    async fn reconcile(&self, key: &Key) -> Result<Option<SystemTime>, ControllerError> {
        let (ns, sa) = key;
        let Ok(identity) = SpiffeId::new(&self.context.authority.policy().trust_domain, ns, sa)
        else {
            tracing::debug!(namespace = %ns, service_account = %sa, "no SPIFFE identity for this name");
            return Ok(None);
        };
        let cached = self.cached_secret(key);
        let Some(account) = self.account(key) else {
            if let Some(secret) = cached
                && secret.type_.as_deref() == Some(SECRET_TYPE)
            {
                self.remove(key).await?;
            }
            return Ok(None);
        };
        if let (Some(secret), Some(roots)) = (&cached, current_roots(&self.context.authority))
            && let Verdict::Current { renew_at, .. } = assess(
                secret,
                &identity,
                self.dns_names(key),
                &roots,
                SystemTime::now(),
            )
        {
            return Ok(Some(renew_at));
        }
        self.ensure(&account, &identity).await
    }

    /// The DNS names configured for an account's certificate (most have none).
    fn dns_names(&self, key: &Key) -> &[String] {
        self.config.dns_names.get(key).map_or(&[], Vec::as_slice)
    }

    /// Reads the Secret, and creates or renews it if needed.
    async fn ensure(
        &self,
        account: &ServiceAccount,
        identity: &SpiffeId,
    ) -> Result<Option<SystemTime>, ControllerError> {
        let ns = account.namespace().unwrap_or_default();
        let dns_names = self.dns_names(&(ns.clone(), account.name_any()));
        let name = secret_name(&account.name_any());
        let api: Api<Secret> = Api::namespaced(self.client.clone(), &ns);
        for _ in 0..CONFLICT_RETRIES {
            let found = api
                .get_opt(&name)
                .await
                .map_err(|e| request_error(e, "get", "secrets", Some(&ns)))?;
            let roots = self.context.authority.roots_pem()?;
            let reason = match &found {
                None => "missing".to_string(),
                Some(s) => match assess(s, identity, dns_names, &roots, SystemTime::now()) {
                    Verdict::Current { renew_at, .. } => return Ok(Some(renew_at)),
                    Verdict::Foreign(why) => {
                        tracing::warn!(secret = %format!("{ns}/{name}"), %why, "leaving alone a Secret citadel cannot write");
                        return Ok(None);
                    }
                    Verdict::Renew(reason) => reason.to_string(),
                },
            };
            let (issued, material) = issue(
                &self.context.authority,
                identity,
                dns_names,
                self.config.ttl,
                OffsetDateTime::now_utc(),
            )?;
            self.context
                .recorder
                .record(&issued)
                .await
                .map_err(ControllerError::Ledger)?;
            let desired = build_secret(account, &material, found.as_ref());
            let (verb, op) = if found.is_some() {
                ("update", "renew")
            } else {
                ("create", "create")
            };
            let written = match &found {
                None => api.create(&PostParams::default(), &desired).await,
                Some(_) => api.replace(&name, &PostParams::default(), &desired).await,
            };
            match written {
                Ok(_) => {
                    self.context.metrics.wrote(CONTROLLER, op);
                    tracing::info!(
                        secret = %format!("{ns}/{name}"),
                        identity = %identity,
                        dns_names = %dns_names.join(","),
                        serial = %issued.serial,
                        not_after = %issued.not_after,
                        %reason,
                        "wrote the service account's certificate Secret ({op})"
                    );
                    return Ok(Some(renew_point(
                        issued.not_before.into(),
                        issued.not_after.into(),
                        &issued.serial,
                    )));
                }
                Err(kube::Error::Api(status)) if status.code == 409 => {
                    tracing::debug!(secret = %format!("{ns}/{name}"), "conflict on {verb}; reading again");
                }
                Err(e) => return Err(request_error(e, verb, "secrets", Some(&ns)).into()),
            }
        }
        Err(ControllerError::Conflicts(format!("secret {ns}/{name}")))
    }

    /// Deletes the Secret of an account that is gone (checked with the API server,
    /// since the cache may lag the account's creation).
    async fn remove(&self, (ns, sa): &Key) -> Result<(), ControllerError> {
        let accounts: Api<ServiceAccount> = Api::namespaced(self.client.clone(), ns);
        let exists = accounts
            .get_opt(sa)
            .await
            .map_err(|e| request_error(e, "get", "serviceaccounts", Some(ns)))?
            .is_some();
        if exists {
            return Ok(());
        }
        let name = secret_name(sa);
        let api: Api<Secret> = Api::namespaced(self.client.clone(), ns);
        match api.delete(&name, &DeleteParams::default()).await {
            Ok(_) => {
                self.context.metrics.wrote(CONTROLLER, "delete");
                tracing::info!(secret = %format!("{ns}/{name}"), "deleted the Secret of a deleted service account");
                Ok(())
            }
            Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
            Err(e) => Err(request_error(e, "delete", "secrets", Some(ns)).into()),
        }
    }
}
