//! Parsing multi-document YAML (or JSON) into typed, validated resources.
//!
//! Every document is parsed on its own, so one broken document never hides the others;
//! each refusal names the file, the line its document starts on, the resource (as far
//! as it could be read) and the field path.
//!
//! Documents in the plain block style manifests use are read by a fast reader that
//! borrows from the input; anything else goes through the full YAML parser. Both yield
//! the same tree, from which the typed spec is deserialized.

mod fast_yaml;
mod node;
mod scalar;

/// Internal consistency checks for the fuzz targets.
#[cfg(feature = "fuzzing")]
pub mod fuzzing {
    use super::{fast_yaml, node::Node};

    /// Panics if the fast block-YAML reader accepts `doc` but reads it differently from
    /// the full YAML parser (or the full parser refuses it).
    pub fn check_fast_reader(doc: &str) {
        if let Ok(fast) = fast_yaml::parse(doc) {
            let full = serde_norway::from_str::<serde_norway::Value>(doc).map(Node::from_yaml);
            let agree = full
                .as_ref()
                .is_ok_and(|full| format!("{fast:?}") == format!("{full:?}"));
            assert!(
                agree,
                "fast reader disagrees on {doc:?}: fast {fast:?}, full {full:?}"
            );
        }
    }
}

use std::sync::Arc;

use node::{Node, NodeError, from_node};

use crate::{
    error::{ConfigError, FieldError},
    kind::{Kind, KindError},
    meta::{ObjectMeta, SourceLocation},
    resource::{Resource, ResourceKey, Spec},
    validation,
};

/// The API groups galley owns; documents of other groups (Deployments, Services, ...)
/// are skipped rather than refused.
const OWNED_GROUPS: &[&str] = &[
    "networking.istio.io",
    "security.istio.io",
    "config.istio.io",
];

/// Reads one YAML document into `T`: with the fast block-YAML reader when the
/// document is plain enough for it (most generated YAML is), else with the full
/// YAML parser. Both read a document the same way.
pub fn from_yaml_str<T: serde::de::DeserializeOwned>(doc: &str) -> Result<T, String> {
    match fast_yaml::parse(doc) {
        Ok(node) => from_node(&node).map_err(|e| e.to_string()),
        Err(fast_yaml::Unsupported) => serde_norway::from_str(doc).map_err(|e| e.to_string()),
    }
}

/// Options for parsing.
#[derive(Debug, Clone)]
pub struct ParseOptions {
    /// Namespace given to resources that name none.
    pub default_namespace: String,
}

impl Default for ParseOptions {
    fn default() -> Self {
        Self {
            default_namespace: "default".to_string(),
        }
    }
}

/// A document that was refused.
#[derive(Debug, Clone, PartialEq)]
pub struct Rejected {
    /// The resource it would have been, when kind, namespace and name could be read.
    pub key: Option<ResourceKey>,
    /// Every problem found.
    pub errors: Vec<ConfigError>,
}

/// A document galley does not own (another API group), passed over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    /// Where it is.
    pub source: SourceLocation,
    /// `apiVersion kind` as written.
    pub what: String,
}

/// The outcome of parsing one file.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DocumentSet {
    /// Resources that parsed and validated.
    pub accepted: Vec<Resource>,
    /// Documents that were refused, with their errors.
    pub rejected: Vec<Rejected>,
    /// Documents of other API groups.
    pub skipped: Vec<Skipped>,
}

impl DocumentSet {
    /// Every error, in document order.
    pub fn errors(&self) -> impl Iterator<Item = &ConfigError> {
        self.rejected.iter().flat_map(|r| r.errors.iter())
    }
}

/// Parses and validates every document of `text`, read from `file`.
pub fn parse_document_set(file: &str, text: &str, opts: &ParseOptions) -> DocumentSet {
    let file: Arc<str> = Arc::from(file);
    let mut set = DocumentSet::default();
    for (line, doc) in split_documents(text) {
        let source = SourceLocation {
            file: file.clone(),
            line,
        };
        parse_document(doc, source, opts, &mut set);
    }
    set
}

/// Splits a multi-document YAML stream at `---` (and `...`) lines, returning each
/// document with the 1-based line it starts on. Empty documents are dropped.
pub fn split_documents(text: &str) -> Vec<(usize, &str)> {
    let mut docs = Vec::new();
    let mut start_byte = 0;
    let mut start_line = 1;
    let mut offset = 0;
    for (idx, line) in text.split_inclusive('\n').enumerate() {
        if is_separator(line) {
            push_doc(&mut docs, start_line, &text[start_byte..offset]);
            start_byte = offset + line.len();
            start_line = idx + 2;
        }
        offset += line.len();
    }
    push_doc(&mut docs, start_line, &text[start_byte..]);
    docs
}

fn is_separator(line: &str) -> bool {
    let rest = if let Some(rest) = line.strip_prefix("---") {
        rest
    } else if let Some(rest) = line.strip_prefix("...") {
        rest
    } else {
        return false;
    };
    let rest = rest.trim();
    rest.is_empty() || rest.starts_with('#')
}

fn push_doc<'a>(docs: &mut Vec<(usize, &'a str)>, start_line: usize, doc: &'a str) {
    let meaningful = doc.lines().any(|l| {
        let t = l.trim_start();
        !t.is_empty() && !t.starts_with('#') && !t.starts_with('%')
    });
    if meaningful {
        // Report the first line that carries content, not a leading comment.
        let leading = doc
            .lines()
            .take_while(|l| {
                let t = l.trim_start();
                t.is_empty() || t.starts_with('#') || t.starts_with('%')
            })
            .count();
        docs.push((start_line + leading, doc));
    }
}

fn parse_document(doc: &str, source: SourceLocation, opts: &ParseOptions, set: &mut DocumentSet) {
    match read_yaml(doc) {
        Ok(node) => parse_node(node, source, opts, set),
        Err(e) => {
            let mut at = source.clone();
            let mut message = e.to_string();
            if let Some(loc) = e.location() {
                at.line = source.line + loc.line().saturating_sub(1);
                // The error text repeats the position relative to the document.
                if let Some(idx) = message.find(" at line ") {
                    message.truncate(idx);
                }
            }
            set.rejected.push(Rejected {
                key: None,
                errors: vec![error_at(
                    at,
                    None,
                    None,
                    None,
                    format!("invalid YAML: {message}"),
                )],
            });
        }
    }
}

/// Reads one YAML document into a tree: with the fast reader when it can, else with
/// the full parser.
fn read_yaml(doc: &str) -> Result<Node<'_>, serde_norway::Error> {
    match fast_yaml::parse(doc) {
        Ok(node) => Ok(node),
        Err(fast_yaml::Unsupported) => serde_norway::from_str(doc).map(Node::from_yaml),
    }
}

fn take_string(node: &mut Node<'_>, key: &str) -> Option<Result<String, ()>> {
    node.take(key).map(|v| match v {
        Node::Str(s) => Ok(s.into_owned()),
        _ => Err(()),
    })
}

fn parse_node(
    mut node: Node<'_>,
    source: SourceLocation,
    opts: &ParseOptions,
    set: &mut DocumentSet,
) {
    if !matches!(node, Node::Map(_)) {
        if node != Node::Null {
            set.rejected.push(Rejected {
                key: None,
                errors: vec![error_at(
                    source,
                    None,
                    None,
                    None,
                    "document is not a mapping".into(),
                )],
            });
        }
        return;
    }
    let api_version = take_string(&mut node, "apiVersion");
    let kind_name = take_string(&mut node, "kind");
    let (api_version, kind_name) = match (api_version, kind_name) {
        (Some(Ok(a)), Some(Ok(k))) => (a, k),
        (a, k) => {
            let kind = k.and_then(Result::ok);
            let missing = match a {
                None => "apiVersion is required",
                Some(Err(())) => "apiVersion must be a string",
                Some(Ok(_)) if kind.is_none() => "kind is required and must be a string",
                Some(Ok(_)) => "kind must be a string",
            };
            set.rejected.push(Rejected {
                key: None,
                errors: vec![error_at(source, kind, None, None, missing.into())],
            });
            return;
        }
    };

    if api_version == "v1" && kind_name == "List" {
        if let Some(Node::Seq(items)) = node.take("items") {
            for item in items {
                parse_node(item, source.clone(), opts, set);
            }
        }
        return;
    }

    let kind = match Kind::resolve(&api_version, &kind_name) {
        Ok(kind) => kind,
        Err(err) => {
            let owned = api_version
                .split_once('/')
                .is_some_and(|(group, _)| OWNED_GROUPS.contains(&group));
            if owned || matches!(err, KindError::UnsupportedVersion { .. }) {
                set.rejected.push(Rejected {
                    key: None,
                    errors: vec![error_at(
                        source,
                        Some(kind_name),
                        None,
                        None,
                        err.to_string(),
                    )],
                });
            } else {
                set.skipped.push(Skipped {
                    source,
                    what: format!("{api_version} {kind_name}"),
                });
            }
            return;
        }
    };

    let meta_node = node.take("metadata").unwrap_or(Node::Null);
    let mut meta: ObjectMeta = match from_node(&meta_node) {
        Ok(m) => m,
        Err(e) => {
            let field = e.field("metadata");
            set.rejected.push(Rejected {
                key: None,
                errors: vec![error_at(
                    source,
                    Some(kind_name),
                    None,
                    None,
                    format!("{field}: {}", e.message()),
                )],
            });
            return;
        }
    };
    if meta.namespace.is_empty() {
        meta.namespace = opts.default_namespace.clone();
    }
    let ident = |field: Option<String>, message: String| ConfigError {
        source: source.clone(),
        kind: Some(kind.as_str().to_string()),
        namespace: Some(meta.namespace.clone()),
        name: (!meta.name.is_empty()).then(|| meta.name.clone()),
        field,
        message,
    };

    let mut errors: Vec<ConfigError> = validation::validate_meta(&meta)
        .into_iter()
        .map(|e| ident(Some(e.field), e.message))
        .collect();

    let spec_node = node.take("spec").unwrap_or(Node::Null);
    let spec = match Spec::deserialize_plain(kind, node::NodeDe(&spec_node)) {
        Ok(spec) => Some(spec),
        Err(e) => {
            let e: NodeError = e;
            errors.push(ident(Some(e.field("spec")), e.message().to_string()));
            None
        }
    };

    let key = (!meta.name.is_empty()).then(|| ResourceKey {
        kind,
        namespace: meta.namespace.clone(),
        name: meta.name.clone(),
    });
    let Some(spec) = spec else {
        set.rejected.push(Rejected { key, errors });
        return;
    };
    let resource = Resource {
        api_version,
        meta,
        spec,
        source: source.clone(),
    };
    let field_errors: Vec<FieldError> = validation::validate(&resource);
    errors.extend(field_errors.into_iter().map(|e| ConfigError {
        source: source.clone(),
        kind: Some(kind.as_str().to_string()),
        namespace: Some(resource.meta.namespace.clone()),
        name: Some(resource.meta.name.clone()),
        field: Some(e.field),
        message: e.message,
    }));
    if errors.is_empty() {
        set.accepted.push(resource);
    } else {
        set.rejected.push(Rejected { key, errors });
    }
}

fn error_at(
    source: SourceLocation,
    kind: Option<String>,
    namespace: Option<String>,
    name: Option<String>,
    message: String,
) -> ConfigError {
    ConfigError {
        source,
        kind,
        namespace,
        name,
        field: None,
        message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_documents_with_start_lines() {
        let text = "# leading comment\na: 1\n---\n\n---\nb: 2\n--- # trailing\n# only a comment\n";
        let docs = split_documents(text);
        assert_eq!(docs.len(), 2);
        assert_eq!(docs[0].0, 2);
        assert_eq!(docs[1].0, 6);
        assert!(docs[1].1.contains("b: 2"));
    }

    #[test]
    fn separator_needs_the_whole_line() {
        assert!(is_separator("---\n"));
        assert!(is_separator("--- # x\n"));
        assert!(!is_separator("----\n"));
        assert!(!is_separator("---a\n"));
    }
}
