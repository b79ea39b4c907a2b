//! Kubernetes label selectors (`matchLabels` and `matchExpressions`), as the
//! injector's `neverInjectSelector` and `alwaysInjectSelector` use them.

use std::collections::BTreeMap;

use serde::Deserialize;

/// Labels of an object.
pub type Labels = BTreeMap<String, String>;

/// A label selector. An empty selector matches everything.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LabelSelector {
    /// Labels that must be present with these values.
    #[serde(default)]
    pub match_labels: BTreeMap<String, String>,
    /// Requirements that must all hold.
    #[serde(default)]
    pub match_expressions: Vec<Requirement>,
}

/// One `matchExpressions` entry.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Requirement {
    /// The label.
    pub key: String,
    /// How the label is compared.
    pub operator: SelectorOperator,
    /// The values for `In` and `NotIn`.
    #[serde(default)]
    pub values: Vec<String>,
}

/// A requirement's operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum SelectorOperator {
    /// The label's value is one of the values.
    In,
    /// The label is absent or its value is none of the values.
    NotIn,
    /// The label is present.
    Exists,
    /// The label is absent.
    DoesNotExist,
}

impl LabelSelector {
    /// Checks the rules the API server applies: `In` and `NotIn` need values,
    /// `Exists` and `DoesNotExist` take none.
    pub fn validate(&self) -> Result<(), String> {
        for r in &self.match_expressions {
            match r.operator {
                SelectorOperator::In | SelectorOperator::NotIn if r.values.is_empty() => {
                    return Err(format!(
                        "matchExpressions key {:?}: operator {:?} needs values",
                        r.key, r.operator
                    ));
                }
                SelectorOperator::Exists | SelectorOperator::DoesNotExist
                    if !r.values.is_empty() =>
                {
                    return Err(format!(
                        "matchExpressions key {:?}: operator {:?} takes no values",
                        r.key, r.operator
                    ));
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Whether `labels` satisfy the selector.
    pub fn matches(&self, labels: &Labels) -> bool {
        self.match_labels
            .iter()
            .all(|(k, v)| labels.get(k) == Some(v))
            && self.match_expressions.iter().all(|r| {
                let value = labels.get(&r.key);
                match r.operator {
                    SelectorOperator::In => value.is_some_and(|v| r.values.contains(v)),
                    SelectorOperator::NotIn => value.is_none_or(|v| !r.values.contains(v)),
                    SelectorOperator::Exists => value.is_some(),
                    SelectorOperator::DoesNotExist => value.is_none(),
                }
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn match_labels_and_expressions() {
        let selector: LabelSelector = serde_norway::from_str(
            "matchLabels: {app: web}\nmatchExpressions:\n- {key: tier, operator: In, values: [front, edge]}\n- {key: debug, operator: DoesNotExist}\n",
        )
        .expect("parses");
        selector.validate().expect("valid");
        assert!(selector.matches(&labels(&[("app", "web"), ("tier", "edge")])));
        assert!(!selector.matches(&labels(&[("app", "web"), ("tier", "back")])));
        assert!(!selector.matches(&labels(&[("app", "web")])));
        assert!(!selector.matches(&labels(&[("app", "web"), ("tier", "front"), ("debug", "")])));
        assert!(LabelSelector::default().matches(&Labels::new()));

        let not_in: LabelSelector = serde_norway::from_str(
            "matchExpressions: [{key: env, operator: NotIn, values: [prod]}, {key: app, operator: Exists}]",
        )
        .expect("parses");
        assert!(not_in.matches(&labels(&[("app", "x")])));
        assert!(!not_in.matches(&labels(&[("app", "x"), ("env", "prod")])));
    }

    #[test]
    fn invalid_selectors_are_named() {
        let in_without_values: LabelSelector =
            serde_norway::from_str("matchExpressions: [{key: a, operator: In}]").expect("parses");
        assert!(
            in_without_values
                .validate()
                .expect_err("fails")
                .contains("needs values")
        );
        assert!(
            serde_norway::from_str::<LabelSelector>(
                "matchExpressions: [{key: a, operator: Maybe}]"
            )
            .is_err()
        );
        assert!(serde_norway::from_str::<LabelSelector>("matchLabelz: {}").is_err());
    }
}
