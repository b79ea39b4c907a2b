//! The sidecar template: minijinja text rendering YAML with the containers,
//! volumes and pull secrets added to a pod. Compiled once per configuration;
//! a template that does not compile refuses the configuration.

use minijinja::{Environment, UndefinedBehavior};
use serde::Serialize;
use serde_json::Value;

/// The built-in template.
pub const DEFAULT_TEMPLATE: &str = include_str!("../templates/sidecar.yaml.j2");

const NAME: &str = "sidecar";

/// Why a template cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    /// The text does not compile.
    #[error("the sidecar template does not compile: {0}")]
    Compile(String),
    /// Rendering failed (an undefined variable, a bad filter argument).
    #[error("the sidecar template failed to render: {0}")]
    Render(String),
    /// The output is not the expected YAML.
    #[error("the sidecar template rendered {0}")]
    Output(String),
}

/// What a rendered template adds to a pod.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Sidecar {
    /// Init containers, placed before the pod's own.
    pub init_containers: Vec<Value>,
    /// Containers, placed after the pod's own.
    pub containers: Vec<Value>,
    /// Volumes.
    pub volumes: Vec<Value>,
    /// Image pull secrets.
    pub image_pull_secrets: Vec<Value>,
}

/// A compiled template.
#[derive(Debug)]
pub struct Template {
    env: Environment<'static>,
}

impl Template {
    /// Compiles `text`.
    pub fn compile(text: &str) -> Result<Self, TemplateError> {
        let mut env = Environment::new();
        // A misspelt variable is an error, not an empty string.
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        // Strict about `tojson` too: an undefined value would render as null.
        env.add_filter("tojson", strict_tojson);
        env.add_template_owned(NAME.to_string(), text.to_string())
            .map_err(|e| TemplateError::Compile(describe(&e)))?;
        Ok(Self { env })
    }

    /// Renders for `context` and reads the result.
    pub fn render(&self, context: &impl Serialize) -> Result<Sidecar, TemplateError> {
        let template = self
            .env
            .get_template(NAME)
            .map_err(|e| TemplateError::Render(describe(&e)))?;
        let text = template
            .render(minijinja::Value::from(minijinja::value::Serde(context)))
            .map_err(|e| TemplateError::Render(describe(&e)))?;
        parse_output(&text)
    }
}

fn strict_tojson(
    value: &minijinja::Value,
    indent: Option<minijinja::Value>,
    kwargs: minijinja::value::Kwargs,
) -> Result<minijinja::Value, minijinja::Error> {
    if value.is_undefined() {
        return Err(minijinja::Error::new(
            minijinja::ErrorKind::UndefinedError,
            "tojson of an undefined value",
        ));
    }
    minijinja::filters::tojson(value, indent, kwargs)
}

fn describe(e: &minijinja::Error) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

fn parse_output(text: &str) -> Result<Sidecar, TemplateError> {
    let value: Value = mesh_model::parse::from_yaml_str(text)
        .map_err(|e| TemplateError::Output(format!("YAML that does not parse: {e}")))?;
    let mut map = match value {
        Value::Object(map) => map,
        Value::Null => return Ok(Sidecar::default()),
        _ => return Err(TemplateError::Output("YAML that is not a mapping".into())),
    };
    let mut list = |key: &str| -> Result<Vec<Value>, TemplateError> {
        match map.remove(key) {
            None | Some(Value::Null) => Ok(Vec::new()),
            Some(Value::Array(items)) => {
                for (i, item) in items.iter().enumerate() {
                    let named = item
                        .get("name")
                        .and_then(Value::as_str)
                        .is_some_and(|n| !n.is_empty());
                    if !named {
                        return Err(TemplateError::Output(format!("{key}[{i}] without a name")));
                    }
                }
                Ok(items)
            }
            Some(_) => Err(TemplateError::Output(format!("{key} that is not a list"))),
        }
    };
    let sidecar = Sidecar {
        init_containers: list("initContainers")?,
        containers: list("containers")?,
        volumes: list("volumes")?,
        image_pull_secrets: list("imagePullSecrets")?,
    };
    if let Some(key) = map.keys().next() {
        return Err(TemplateError::Output(format!(
            "an unknown key {key:?} (expected initContainers, containers, volumes, imagePullSecrets)"
        )));
    }
    Ok(sidecar)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn custom_templates_render_and_are_checked() {
        let t = Template::compile(
            "containers:\n- name: proxy\n  image: {{ values.image | tojson }}\nvolumes: []\n",
        )
        .expect("compiles");
        let out = t
            .render(&json!({"values": {"image": "a\"b: c"}}))
            .expect("renders");
        assert_eq!(
            out.containers,
            vec![json!({"name": "proxy", "image": "a\"b: c"})]
        );
        assert!(out.init_containers.is_empty());

        let err = t.render(&json!({"values": {}})).expect_err("undefined");
        assert!(matches!(err, TemplateError::Render(_)), "{err}");

        assert!(matches!(
            Template::compile("{% if %}"),
            Err(TemplateError::Compile(_))
        ));
        let bad = Template::compile("containers: 3\n").expect("compiles");
        assert!(
            bad.render(&json!({}))
                .expect_err("fails")
                .to_string()
                .contains("not a list")
        );
        let unnamed = Template::compile("containers: [{image: x}]\n").expect("compiles");
        assert!(
            unnamed
                .render(&json!({}))
                .expect_err("fails")
                .to_string()
                .contains("without a name")
        );
        let unknown = Template::compile("sidecars: []\n").expect("compiles");
        assert!(
            unknown
                .render(&json!({}))
                .expect_err("fails")
                .to_string()
                .contains("sidecars")
        );
    }

    #[test]
    fn the_default_template_compiles() {
        Template::compile(DEFAULT_TEMPLATE).expect("compiles");
    }
}
