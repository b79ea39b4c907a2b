//! Injected failures: make matching requests fail with a chosen status.

use crate::status::{ApiError, reason_for_code};

/// A rule making requests fail, installed with [`crate::KubeTestServer::inject_fault`].
#[derive(Debug, Clone)]
pub struct Fault {
    /// Resource plural to match (`services`); `None` matches every resource.
    pub resource: Option<String>,
    /// Verb to match (`get`, `list`, `watch`, `create`, `update`, `patch`, `delete`,
    /// `deletecollection`); `None` matches every verb.
    pub verb: Option<String>,
    /// HTTP status code to answer.
    pub code: u16,
    /// Message; when `None`, one like the real server's is written (for 403 it names
    /// the user, verb, resource, group and namespace).
    pub message: Option<String>,
    /// How many matching requests fail; `None` for all until cleared.
    pub times: Option<usize>,
}

impl Fault {
    /// Fails requests for `resource` (a plural such as `services`) with `code`.
    pub fn new(resource: &str, code: u16) -> Self {
        Self {
            resource: Some(resource.to_string()),
            verb: None,
            code,
            message: None,
            times: None,
        }
    }

    /// Only requests with this verb.
    pub fn verb(mut self, verb: &str) -> Self {
        self.verb = Some(verb.to_string());
        self
    }

    /// Only the next `n` matching requests.
    pub fn times(mut self, n: usize) -> Self {
        self.times = Some(n);
        self
    }

    /// A message of your own.
    pub fn message(mut self, message: &str) -> Self {
        self.message = Some(message.to_string());
        self
    }

    fn matches(&self, verb: &str, plural: &str) -> bool {
        self.verb.as_deref().is_none_or(|v| v == verb)
            && self.resource.as_deref().is_none_or(|r| r == plural)
            && self.times.is_none_or(|n| n > 0)
    }

    fn error(&self, request: &RequestInfo<'_>) -> ApiError {
        let message = self.message.clone().unwrap_or_else(|| match self.code {
            403 => {
                let scope = match request.namespace {
                    Some(ns) => format!("in the namespace \"{ns}\""),
                    None => "at the cluster scope".to_string(),
                };
                format!(
                    "{} is forbidden: User \"system:serviceaccount:default:default\" cannot {} \
                     resource \"{}\" in API group \"{}\" {scope}",
                    crate::status::qualified(request.plural, request.group),
                    request.verb,
                    request.plural,
                    request.group
                )
            }
            code => format!(
                "{} (injected fault for {} {})",
                reason_for_code(code),
                request.verb,
                request.plural
            ),
        });
        ApiError::new(self.code, message)
    }
}

/// What a request asks, for matching faults.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RequestInfo<'a> {
    pub(crate) verb: &'a str,
    pub(crate) group: &'a str,
    pub(crate) plural: &'a str,
    pub(crate) namespace: Option<&'a str>,
}

/// Installed faults.
#[derive(Debug, Default)]
pub(crate) struct Faults {
    rules: Vec<Fault>,
}

impl Faults {
    pub(crate) fn add(&mut self, fault: Fault) {
        self.rules.push(fault);
    }

    pub(crate) fn clear(&mut self) {
        self.rules.clear();
    }

    /// The error for this request if a fault matches (consuming one of its uses).
    pub(crate) fn check(&mut self, request: &RequestInfo<'_>) -> Option<ApiError> {
        let rule = self
            .rules
            .iter_mut()
            .find(|f| f.matches(request.verb, request.plural))?;
        if let Some(n) = rule.times.as_mut() {
            *n -= 1;
        }
        let error = rule.error(request);
        self.rules.retain(|f| f.times != Some(0));
        Some(error)
    }
}
