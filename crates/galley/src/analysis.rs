//! The analysis galley runs on each configuration version, and `meshctl analyze`
//! runs offline ([`crate::offline`]): the cross-resource checks of
//! `mesh_model::analyze` and the mixer expression checks of
//! `mixer_core::analysis` (`GAL0111`), merged into one sorted list.

use std::sync::Arc;

use mesh_model::{AnalysisMessage, Resource, analysis::sort_messages};

use crate::store::ConfigView;

/// One analysis of a published view, as the status writer reads it.
#[derive(Debug, Clone)]
pub struct AnalysisRun {
    /// The view analysed.
    pub view: Arc<ConfigView>,
    /// The Kubernetes generation of each object behind the view's files, by file
    /// name (empty for other sources).
    pub generations: imbl::HashMap<String, i64>,
    /// What analysis found, sorted.
    pub messages: Arc<Vec<AnalysisMessage>>,
}

/// Every analysis message for `resources`, sorted by resource, code, field and text.
pub fn analyze(resources: &[&Resource]) -> Vec<AnalysisMessage> {
    let mut messages = mesh_model::analyze(resources);
    messages.extend(mixer_core::analysis::analyze(resources));
    sort_messages(&mut messages);
    messages
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use mesh_model::{ParseOptions, parse_document_set};

    use super::*;

    #[test]
    fn mesh_and_mixer_findings_are_merged_in_order() {
        let yaml = "apiVersion: config.istio.io/v1alpha2
kind: rule
metadata: {name: b, namespace: istio-system}
spec:
  match: source.name == 3
---
apiVersion: config.istio.io/v1alpha2
kind: rule
metadata: {name: a, namespace: istio-system}
spec:
  match: request.size == \"x\"
  actions:
  - handler: missing
    instances: [missing]
";
        let set = parse_document_set("t.yaml", yaml, &ParseOptions::default());
        assert_eq!(set.errors().count(), 0);
        let resources: Vec<&Resource> = set.accepted.iter().collect();
        let found: Vec<(String, &str, Option<String>)> = analyze(&resources)
            .into_iter()
            .map(|m| (m.resource.name, m.code, m.field))
            .collect();
        let at = |name: &str, code, field: &str| (name.to_string(), code, Some(field.to_string()));
        assert_eq!(
            found,
            vec![
                at("a", "GAL0108", "spec.actions[0].handler"),
                at("a", "GAL0108", "spec.actions[0].instances[0]"),
                at("a", "GAL0111", "spec.match"),
                at("b", "GAL0111", "spec.match"),
            ]
        );
    }
}
