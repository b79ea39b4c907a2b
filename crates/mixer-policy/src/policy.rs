//! One version of the policy configuration, compiled: handlers configured,
//! instances' expressions and rules' `match` conditions type-checked and compiled
//! once, ready to decide Check requests.
//!
//! Names: a rule action names its handler and instances as `name` (same
//! namespace) or `name.namespace`. Rules of the root namespace (`istio-system`)
//! apply to every request; a rule of another namespace applies to requests whose
//! destination is in it (`destination.namespace`, or the namespace part of
//! `destination.service.host`).
//!
//! A resource that cannot be used (unknown adapter or template, bad params, an
//! expression that does not type-check, a reference to nothing) is left out and
//! reported in [`Policy::issues`]; the rest of the configuration still serves.

use std::{
    collections::{BTreeMap, HashMap},
    net::IpAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use mesh_model::{
    Resource, Spec,
    security::{AuthorizationPolicy, ROOT_NAMESPACE},
};
use mixer_core::value::destination_namespace;
use mixer_core::{
    Bag, Value,
    expr::{AttributeRef, Compiled, compile},
    manifest::Manifest,
};

use crate::adapter::{
    CheckResult, QuotaResult, code,
    denier::Denier,
    listchecker::ListChecker,
    memquota::MemQuota,
    rbac::{AuthzRequest, NamedPolicy, Rbac},
    sqlquota::{DATABASE_PARAM, QuotaDatabase, SqlQuota},
};
use crate::cache::{CheckCache, RefSet, present};

/// A configuration problem, naming the resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issue {
    /// `kind/namespace/name`.
    pub resource: String,
    /// What is wrong.
    pub message: String,
}

enum HandlerImpl {
    Denier(Denier),
    List(Arc<ListChecker>),
    MemQuota(Arc<MemQuota>),
    SqlQuota(Arc<SqlQuota>),
    Rbac,
}

enum InstanceImpl {
    CheckNothing,
    ListEntry(Expr),
    Quota(BTreeMap<String, Expr>),
    Authorization,
}

/// A compiled expression and the policy's references it reads.
struct Expr {
    compiled: Compiled,
    refs: RefSet,
}

impl Expr {
    fn new(compiled: Compiled) -> Self {
        Self {
            compiled,
            refs: RefSet::default(),
        }
    }
}

/// What the rbac adapter reads (see [`authz_request`]).
const RBAC_ATTRIBUTES: &[&str] = &[
    "source.principal",
    "source.namespace",
    "source.ip",
    "request.auth.principal",
    "request.auth.audiences",
    "request.auth.presenter",
    "request.auth.claims",
    "destination.namespace",
    "destination.service.host",
    "destination.labels",
    "destination.ip",
    "destination.port",
    "connection.requested_server_name",
    "request.host",
    "request.method",
    "request.path",
    "request.headers",
];

/// What scoping rules to a namespace reads (see [`destination_namespace`]).
const NAMESPACE_ATTRIBUTES: &[&str] = &["destination.namespace", "destination.service.host"];

/// Every attribute reference of a policy, each once, sorted, and the sets of
/// them each part of the policy reads.
struct RefTable {
    refs: Vec<AttributeRef>,
    index: HashMap<(String, Option<String>), usize>,
}

impl RefTable {
    fn build<'a>(exprs: impl Iterator<Item = &'a Compiled>) -> Self {
        let mut all: BTreeMap<(String, Option<String>), bool> = BTreeMap::new();
        for c in exprs {
            for r in c.referenced_attributes() {
                let rescued = all.entry((r.name.clone(), r.key.clone())).or_insert(true);
                *rescued &= r.rescued;
            }
        }
        for name in RBAC_ATTRIBUTES.iter().chain(NAMESPACE_ATTRIBUTES) {
            all.entry(((*name).to_string(), None)).or_insert(true);
        }
        let refs: Vec<AttributeRef> = all
            .into_iter()
            .map(|((name, key), rescued)| AttributeRef { name, key, rescued })
            .collect();
        let index = refs
            .iter()
            .enumerate()
            .map(|(i, r)| ((r.name.clone(), r.key.clone()), i))
            .collect();
        Self { refs, index }
    }

    fn set_of<'a>(&self, refs: impl Iterator<Item = (&'a str, Option<&'a str>)>) -> RefSet {
        let mut set = RefSet::for_table(self.refs.len());
        for (name, key) in refs {
            if let Some(i) = self.index.get(&(name.to_string(), key.map(str::to_string))) {
                set.insert(*i);
            }
        }
        set
    }

    fn fill(&self, e: &mut Expr) {
        e.refs = self.set_of(
            e.compiled
                .referenced_attributes()
                .iter()
                .map(|r| (r.name.as_str(), r.key.as_deref())),
        );
    }

    fn names(&self, names: &[&str]) -> RefSet {
        self.set_of(names.iter().map(|n| (*n, None)))
    }
}

struct RuleImpl {
    namespace: String,
    condition: Option<Expr>,
    actions: Vec<(String, Vec<String>)>,
}

/// A quota asked for in a Check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuotaAsk {
    /// Amount.
    pub amount: i64,
    /// Grant less rather than nothing.
    pub best_effort: bool,
}

/// The decision for one Check.
#[derive(Debug, Clone)]
pub struct Decision<'p> {
    /// The preconditions' result (the most restrictive of every handler's).
    pub precondition: CheckResult,
    /// Quota grants, by quota name.
    pub quotas: BTreeMap<String, QuotaResult>,
    /// Quotas that could not be counted (their database failed), with why.
    pub quota_errors: BTreeMap<String, String>,
    /// Quotas asked for that no applicable rule sends to a quota handler (each
    /// granted 0).
    pub no_rule: Vec<String>,
    /// The attributes the decision read, each with whether the bag held it.
    pub referenced: Vec<(&'p AttributeRef, bool)>,
    /// Whether the precondition came from the check cache.
    pub cached: bool,
    /// Allocations counted in a database, made by [`Decision::allocate`].
    pending: Vec<PendingQuota>,
}

/// A quota allocation waiting for its database.
#[derive(Debug, Clone)]
struct PendingQuota {
    name: String,
    quota: Arc<SqlQuota>,
    dimensions: BTreeMap<String, String>,
    ask: QuotaAsk,
    dedup_id: String,
}

impl Decision<'_> {
    /// Whether quotas counted in a database are still to be allocated.
    pub fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    /// Allocates the quotas counted in a database (SQL quota handlers). A
    /// database failure grants nothing and is reported in `quota_errors`.
    pub async fn allocate(&mut self) {
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
        for p in std::mem::take(&mut self.pending) {
            let r = p
                .quota
                .alloc(
                    &p.name,
                    &p.dimensions,
                    p.ask.amount,
                    p.ask.best_effort,
                    &p.dedup_id,
                    now_ms,
                )
                .await;
            let granted = match r {
                Ok(r) => r,
                Err(e) => {
                    tracing::warn!(quota = %p.name, database = %p.quota.database().url(), error = %e, "quota allocation failed");
                    self.quota_errors.insert(p.name.clone(), e.to_string());
                    QuotaResult {
                        granted: 0,
                        valid_duration: Duration::ZERO,
                    }
                }
            };
            self.quotas.insert(p.name, granted);
        }
    }
}

/// What outlives one configuration version: memquota counts (kept while a
/// handler's params stay the same) and quota database pools (by URL).
#[derive(Debug, Default)]
pub struct Stores {
    default_database: Option<String>,
    memquotas: HashMap<String, Arc<MemQuota>>,
    databases: HashMap<String, Arc<QuotaDatabase>>,
}

impl Stores {
    /// Stores whose SQL quota handlers count in `default_database` unless their
    /// params name another.
    pub fn new(default_database: Option<String>) -> Self {
        Self {
            default_database,
            ..Self::default()
        }
    }

    fn memquota(
        &mut self,
        key: &str,
        params: &serde_json::Value,
    ) -> Result<Arc<MemQuota>, crate::adapter::ParamsError> {
        let id = format!("{key}\n{params}");
        if let Some(q) = self.memquotas.get(&id) {
            return Ok(q.clone());
        }
        let q = Arc::new(MemQuota::new(params)?);
        self.memquotas.insert(id, q.clone());
        Ok(q)
    }

    fn sqlquota(&mut self, params: &serde_json::Value) -> Result<Arc<SqlQuota>, String> {
        let url = match params.get(DATABASE_PARAM) {
            Some(serde_json::Value::String(url)) => url.clone(),
            Some(_) => return Err(format!("sqlquota params: {DATABASE_PARAM} must be a URL")),
            None => self.default_database.clone().ok_or(
                "sqlquota params: no database named and mixer-policy has no --quota-database",
            )?,
        };
        let db = match self.databases.get(&url) {
            Some(db) => db.clone(),
            None => {
                let db = Arc::new(QuotaDatabase::lazy(&url).map_err(|e| e.to_string())?);
                self.databases.insert(url, db.clone());
                db
            }
        };
        SqlQuota::new(params, db)
            .map(Arc::new)
            .map_err(|e| e.to_string())
    }

    /// Forgets what `policy` no longer uses.
    fn keep_used(&mut self, handlers: &HashMap<String, HandlerImpl>) {
        self.memquotas.retain(|_, q| {
            handlers
                .values()
                .any(|h| matches!(h, HandlerImpl::MemQuota(m) if Arc::ptr_eq(m, q)))
        });
        self.databases.retain(|_, db| {
            handlers
                .values()
                .any(|h| matches!(h, HandlerImpl::SqlQuota(s) if Arc::ptr_eq(s.database(), db)))
        });
    }
}

/// A compiled configuration.
pub struct Policy {
    manifest: Manifest,
    handlers: HashMap<String, HandlerImpl>,
    instances: HashMap<String, InstanceImpl>,
    rules: Vec<RuleImpl>,
    rbac: Rbac,
    issues: Vec<Issue>,
    refs: Vec<AttributeRef>,
    rbac_refs: RefSet,
    namespace_refs: RefSet,
    /// Whether a rule applies to one namespace only.
    scoped: bool,
    cache: CheckCache,
}

impl std::fmt::Debug for Policy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Policy")
            .field("handlers", &self.handlers.len())
            .field("instances", &self.instances.len())
            .field("rules", &self.rules.len())
            .field("issues", &self.issues)
            .finish()
    }
}

fn full_name(name: &str, namespace: &str) -> String {
    if name.contains('.') {
        name.to_string()
    } else {
        format!("{name}.{namespace}")
    }
}

impl Policy {
    /// Compiles the mixer resources among `resources` (other kinds are passed
    /// over, AuthorizationPolicies feed the rbac adapter), with nothing carried
    /// over from an earlier version and no default quota database.
    pub fn compile<'a>(resources: impl IntoIterator<Item = &'a Resource>) -> Policy {
        Self::compile_with(resources, &mut Stores::default())
    }

    /// Compiles a configuration version, taking quota counts and databases from
    /// `stores` (and leaving there only what this version uses).
    pub fn compile_with<'a>(
        resources: impl IntoIterator<Item = &'a Resource>,
        stores: &mut Stores,
    ) -> Policy {
        let resources: Vec<&Resource> = resources.into_iter().collect();
        let mut issues = Vec::new();
        let id =
            |r: &Resource| format!("{}/{}/{}", r.kind().as_str(), r.meta.namespace, r.meta.name);
        let mut manifest = Manifest::standard();
        for r in &resources {
            if let Spec::AttributeManifest(m) = &r.spec
                && let Err(e) = manifest.extend(m)
            {
                issues.push(Issue {
                    resource: id(r),
                    message: e.to_string(),
                });
            }
        }
        let mut handlers = HashMap::new();
        let mut instances = HashMap::new();
        let mut authz = Vec::new();
        for r in &resources {
            let key = format!("{}.{}", r.meta.name, r.meta.namespace);
            match &r.spec {
                Spec::Handler(h) => {
                    let adapter = h.adapter_name();
                    let built = match adapter {
                        "denier" => Denier::new(&h.params).map(HandlerImpl::Denier),
                        "listchecker" | "list" => {
                            ListChecker::new(&h.params).map(|l| HandlerImpl::List(Arc::new(l)))
                        }
                        "memquota" => stores.memquota(&key, &h.params).map(HandlerImpl::MemQuota),
                        "sqlquota" => match stores.sqlquota(&h.params) {
                            Ok(q) => Ok(HandlerImpl::SqlQuota(q)),
                            Err(message) => {
                                issues.push(Issue {
                                    resource: id(r),
                                    message,
                                });
                                continue;
                            }
                        },
                        "rbac" => Ok(HandlerImpl::Rbac),
                        other => {
                            issues.push(Issue {
                                resource: id(r),
                                message: format!("unknown adapter {other:?} (denier, listchecker, memquota, sqlquota, rbac)"),
                            });
                            continue;
                        }
                    };
                    match built {
                        Ok(h) => {
                            handlers.insert(key, h);
                        }
                        Err(e) => issues.push(Issue {
                            resource: id(r),
                            message: e.to_string(),
                        }),
                    }
                }
                Spec::Instance(i) => {
                    let template = i.template_name();
                    match instance(template, &i.params, &manifest) {
                        Ok(inst) => {
                            instances.insert(key, inst);
                        }
                        Err(message) => issues.push(Issue {
                            resource: id(r),
                            message,
                        }),
                    }
                }
                Spec::AuthorizationPolicy(p) => authz.push(NamedPolicy {
                    namespace: r.meta.namespace.clone(),
                    name: r.meta.name.clone(),
                    spec: AuthorizationPolicy::clone(p),
                }),
                _ => {}
            }
        }
        let mut rules = Vec::new();
        for r in &resources {
            let Spec::Rule(rule) = &r.spec else { continue };
            let ns = &r.meta.namespace;
            let condition = match mixer_core::expr::compile_match(&rule.match_expr, &manifest) {
                Ok(c) => c.map(Expr::new),
                Err(message) => {
                    issues.push(Issue {
                        resource: id(r),
                        message,
                    });
                    continue;
                }
            };
            let mut actions = Vec::new();
            let mut broken = None;
            for a in &rule.actions {
                let handler = full_name(&a.handler, ns);
                if !handlers.contains_key(&handler) {
                    broken = Some(format!("action handler {handler} is not configured"));
                    break;
                }
                let mut names = Vec::new();
                for i in &a.instances {
                    let name = full_name(i, ns);
                    if !instances.contains_key(&name) {
                        broken = Some(format!("action instance {name} is not configured"));
                        break;
                    }
                    names.push(name);
                }
                actions.push((handler, names));
            }
            if let Some(message) = broken {
                issues.push(Issue {
                    resource: id(r),
                    message,
                });
                continue;
            }
            rules.push(RuleImpl {
                namespace: ns.clone(),
                condition,
                actions,
            });
        }
        stores.keep_used(&handlers);
        let table = {
            let conditions = rules.iter().filter_map(|r| r.condition.as_ref());
            let values = instances.values().flat_map(|i| match i {
                InstanceImpl::ListEntry(e) => vec![e],
                InstanceImpl::Quota(dims) => dims.values().collect(),
                _ => Vec::new(),
            });
            RefTable::build(conditions.chain(values).map(|e| &e.compiled))
        };
        for rule in &mut rules {
            if let Some(c) = &mut rule.condition {
                table.fill(c);
            }
        }
        for i in instances.values_mut() {
            match i {
                InstanceImpl::ListEntry(e) => table.fill(e),
                InstanceImpl::Quota(dims) => dims.values_mut().for_each(|e| table.fill(e)),
                _ => {}
            }
        }
        let scoped = rules.iter().any(|r| r.namespace != ROOT_NAMESPACE);
        Policy {
            manifest,
            handlers,
            instances,
            rules,
            rbac: Rbac::new(authz),
            issues,
            rbac_refs: table.names(RBAC_ATTRIBUTES),
            namespace_refs: table.names(NAMESPACE_ATTRIBUTES),
            refs: table.refs,
            scoped,
            cache: CheckCache::default(),
        }
    }

    /// The problems found, each naming its resource.
    pub fn issues(&self) -> &[Issue] {
        &self.issues
    }

    /// The vocabulary in force (standard plus attributemanifest resources).
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// The list checkers (their lists are fetched by the server).
    pub fn list_checkers(&self) -> Vec<Arc<ListChecker>> {
        self.handlers
            .values()
            .filter_map(|h| match h {
                HandlerImpl::List(l) => Some(l.clone()),
                _ => None,
            })
            .collect()
    }

    /// Decides a Check: every applicable rule whose condition holds runs its
    /// actions; quotas are allocated for the instances asked for.
    pub fn check(
        &self,
        bag: &dyn Bag,
        quotas: &BTreeMap<String, QuotaAsk>,
        dedup_id: &str,
        now: Instant,
    ) -> Decision<'_> {
        if quotas.is_empty()
            && let Some((result, set)) = self.cache.lookup(&self.refs, bag, now)
        {
            return Decision {
                precondition: result,
                quotas: BTreeMap::new(),
                quota_errors: BTreeMap::new(),
                no_rule: Vec::new(),
                referenced: self.referenced(&set, bag),
                cached: true,
                pending: Vec::new(),
            };
        }
        let mut touched = RefSet::for_table(self.refs.len());
        let destination_ns = if self.scoped {
            touched.union(&self.namespace_refs);
            destination_namespace(bag)
        } else {
            None
        };
        let mut result = CheckResult::ok(Duration::from_secs(60), 10_000);
        let mut granted: BTreeMap<String, QuotaResult> = BTreeMap::new();
        let mut pending: Vec<PendingQuota> = Vec::new();
        for rule in &self.rules {
            if rule.namespace != ROOT_NAMESPACE
                && destination_ns.as_deref() != Some(rule.namespace.as_str())
            {
                continue;
            }
            if let Some(c) = &rule.condition {
                touched.union(&c.refs);
                // A condition that cannot be evaluated (an attribute missing)
                // does not hold.
                if !c.compiled.evaluate_bool(bag).unwrap_or(false) {
                    continue;
                }
            }
            for (handler, instances) in &rule.actions {
                let Some(h) = self.handlers.get(handler) else {
                    continue;
                };
                for name in instances {
                    let Some(inst) = self.instances.get(name) else {
                        continue;
                    };
                    let outcome = match (h, inst) {
                        (HandlerImpl::Denier(d), _) => Some(d.check()),
                        (HandlerImpl::List(l), InstanceImpl::ListEntry(value)) => {
                            touched.union(&value.refs);
                            Some(match value.compiled.evaluate(bag) {
                                Ok(v) => l.check(&v, now),
                                Err(e) => CheckResult {
                                    code: code::INVALID_ARGUMENT,
                                    message: format!("{name}: {e}"),
                                    valid_duration: Duration::ZERO,
                                    valid_use_count: 0,
                                },
                            })
                        }
                        (HandlerImpl::Rbac, InstanceImpl::Authorization) => {
                            touched.union(&self.rbac_refs);
                            Some(self.rbac.check(&authz_request(bag)))
                        }
                        (HandlerImpl::MemQuota(q), InstanceImpl::Quota(dims)) => {
                            if let Some(ask) = quotas.get(name) {
                                let values = dimensions(dims, bag, &mut touched);
                                let r = q
                                    .alloc(
                                        name,
                                        &values,
                                        ask.amount,
                                        ask.best_effort,
                                        dedup_id,
                                        now,
                                    )
                                    .unwrap_or(QuotaResult {
                                        granted: 0,
                                        valid_duration: Duration::ZERO,
                                    });
                                granted.insert(name.clone(), r);
                            }
                            None
                        }
                        (HandlerImpl::SqlQuota(q), InstanceImpl::Quota(dims)) => {
                            if let Some(ask) = quotas.get(name) {
                                pending.push(PendingQuota {
                                    name: name.clone(),
                                    quota: q.clone(),
                                    dimensions: dimensions(dims, bag, &mut touched),
                                    ask: ask.clone(),
                                    dedup_id: dedup_id.to_string(),
                                });
                            }
                            None
                        }
                        _ => None,
                    };
                    if let Some(r) = outcome {
                        result = combine(result, r);
                    }
                }
            }
        }
        // A quota asked for that no rule grants gets nothing.
        let mut no_rule = Vec::new();
        for name in quotas.keys() {
            if granted.contains_key(name) || pending.iter().any(|p| &p.name == name) {
                continue;
            }
            no_rule.push(name.clone());
            granted.insert(
                name.clone(),
                QuotaResult {
                    granted: 0,
                    valid_duration: Duration::ZERO,
                },
            );
        }
        if quotas.is_empty() {
            self.cache.insert(&self.refs, &touched, bag, &result, now);
        }
        let referenced = self.referenced(&touched, bag);
        Decision {
            precondition: result,
            quotas: granted,
            quota_errors: BTreeMap::new(),
            no_rule,
            referenced,
            cached: false,
            pending,
        }
    }
}

impl Policy {
    /// The references in `set`, each with whether `bag` holds it (each
    /// attribute probed once, however many expressions read it).
    fn referenced(&self, set: &RefSet, bag: &dyn Bag) -> Vec<(&AttributeRef, bool)> {
        set.iter()
            .filter_map(|i| self.refs.get(i))
            .map(|r| (r, present(bag, r)))
            .collect()
    }

    /// Precondition results cached: (signatures, entries).
    pub fn cache_stats(&self) -> (usize, usize) {
        self.cache.stats()
    }
}

/// A quota instance's dimension values for one request (a dimension whose
/// expression cannot be evaluated is left out).
fn dimensions(
    dims: &BTreeMap<String, Expr>,
    bag: &dyn Bag,
    touched: &mut RefSet,
) -> BTreeMap<String, String> {
    let mut values = BTreeMap::new();
    for (k, c) in dims {
        touched.union(&c.refs);
        if let Ok(v) = c.compiled.evaluate(bag) {
            values.insert(k.clone(), text(&v));
        }
    }
    values
}

/// The more restrictive of two results: the first refusal wins; reuse is bounded
/// by the shortest duration and smallest count.
fn combine(a: CheckResult, b: CheckResult) -> CheckResult {
    let (code, message) = if !a.is_ok() {
        (a.code, a.message)
    } else {
        (b.code, b.message)
    };
    CheckResult {
        code,
        message,
        valid_duration: a.valid_duration.min(b.valid_duration),
        valid_use_count: a.valid_use_count.min(b.valid_use_count),
    }
}

fn instance(
    template: &str,
    params: &serde_json::Value,
    manifest: &Manifest,
) -> Result<InstanceImpl, String> {
    let field = |name: &str| params.get(name).and_then(|v| v.as_str());
    match template {
        "checknothing" => Ok(InstanceImpl::CheckNothing),
        "authorization" => Ok(InstanceImpl::Authorization),
        "listentry" => {
            let text = field("value").ok_or("listentry needs params.value (an expression)")?;
            compile(text, manifest)
                .map(|c| InstanceImpl::ListEntry(Expr::new(c)))
                .map_err(|e| format!("params.value: {e}"))
        }
        "quota" => {
            let mut dims = BTreeMap::new();
            if let Some(map) = params.get("dimensions").and_then(|d| d.as_object()) {
                for (k, v) in map {
                    let text = v
                        .as_str()
                        .ok_or_else(|| format!("params.dimensions.{k} must be an expression"))?;
                    let c = compile(text, manifest)
                        .map_err(|e| format!("params.dimensions.{k}: {e}"))?;
                    dims.insert(k.clone(), Expr::new(c));
                }
            }
            Ok(InstanceImpl::Quota(dims))
        }
        other => Err(format!(
            "unknown template {other:?} (checknothing, listentry, quota, authorization)"
        )),
    }
}

fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.to_string(),
        Value::Int64(i) => i.to_string(),
        Value::Double(d) => d.to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Ip(ip) => ip.to_string(),
        other => format!("{other:?}"),
    }
}

fn string_attr(bag: &dyn Bag, name: &str) -> Option<String> {
    bag.get(name).and_then(|v| v.as_str().map(str::to_string))
}

fn ip_attr(bag: &dyn Bag, name: &str) -> Option<IpAddr> {
    match bag.get(name) {
        Some(Value::Ip(ip)) => Some(ip),
        Some(Value::String(s)) => s.parse().ok(),
        _ => None,
    }
}

fn map_attr(bag: &dyn Bag, name: &str) -> BTreeMap<String, String> {
    match bag.get(name) {
        Some(Value::StringMap(m)) => (*m).clone(),
        _ => BTreeMap::new(),
    }
}

/// What the rbac adapter needs, read from the request's attributes.
fn authz_request(bag: &dyn Bag) -> AuthzRequest {
    AuthzRequest {
        source_principal: string_attr(bag, "source.principal"),
        source_namespace: string_attr(bag, "source.namespace"),
        source_ip: ip_attr(bag, "source.ip"),
        remote_ip: None,
        request_principal: string_attr(bag, "request.auth.principal"),
        audiences: string_attr(bag, "request.auth.audiences")
            .into_iter()
            .collect(),
        presenter: string_attr(bag, "request.auth.presenter"),
        claims: map_attr(bag, "request.auth.claims"),
        destination_namespace: destination_namespace(bag).unwrap_or_default(),
        destination_labels: map_attr(bag, "destination.labels"),
        destination_ip: ip_attr(bag, "destination.ip"),
        destination_port: match bag.get("destination.port") {
            Some(Value::Int64(p)) => u16::try_from(p).ok(),
            _ => None,
        },
        sni: string_attr(bag, "connection.requested_server_name"),
        host: string_attr(bag, "request.host"),
        method: string_attr(bag, "request.method"),
        path: string_attr(bag, "request.path"),
        headers: map_attr(bag, "request.headers"),
    }
}

#[cfg(test)]
#[path = "policy_tests.rs"]
mod tests;
