use crate::{
    kind::Kind,
    validation::test_support::{assert_clean, assert_error_at, errors},
};

#[test]
fn mixer_docs_examples_are_clean() {
    assert_clean(
        Kind::Handler,
        "compiledAdapter: prometheus\nparams:\n  metrics:\n  - name: request_count\n    instance_name: requestcount.instance.istio-system\n    kind: COUNTER\n    label_names: [reporter, source]\n",
    );
    assert_clean(
        Kind::Handler,
        "adapter: mygrpcadapter\nconnection:\n  address: mygrpcadapter.default:44225\n  timeout: 5s\n",
    );
    assert_clean(
        Kind::Instance,
        "compiledTemplate: metric\nparams:\n  value: \"1\"\n  dimensions:\n    source: source.workload.name | \"unknown\"\n  monitored_resource_type: '\"UNSPECIFIED\"'\n",
    );
    assert_clean(
        Kind::Rule,
        "match: context.protocol == \"http\"\nactions:\n- handler: prometheus\n  instances: [requestcount, requestsize.istio-system]\n  name: a1\nrequestHeaderOperations:\n- name: x-id\n  values: [request.id]\n  operation: APPEND\nsampling:\n  random:\n    percentSampled:\n      numerator: 10\n",
    );
    assert_clean(
        Kind::AttributeManifest,
        "name: kubernetes\nrevision: \"1\"\nattributes:\n  source.ip:\n    valueType: IP_ADDRESS\n  request.headers:\n    valueType: STRING_MAP\n    description: all headers\n  request.size:\n    valueType: INT64\n",
    );
}

#[test]
fn handlers_need_an_adapter() {
    assert_error_at(Kind::Handler, "params: {}\n", "spec");
    assert_error_at(
        Kind::Handler,
        "adapter: a\ncompiledAdapter: b\n",
        "spec.adapter",
    );
    assert_error_at(
        Kind::Handler,
        "adapter: a\nconnection:\n  address: nowhere\n",
        "spec.connection.address",
    );
    assert_error_at(
        Kind::Handler,
        "adapter: a\nconnection:\n  address: a.b:80\n  timeout: 2\n",
        "spec.connection.timeout",
    );
    assert_error_at(Kind::Handler, "adapter: a\nparams: [1, 2]\n", "spec.params");
}

#[test]
fn instances_need_a_template() {
    assert_error_at(Kind::Instance, "params:\n  value: \"1\"\n", "spec");
    assert_error_at(
        Kind::Instance,
        "template: a\ncompiledTemplate: b\n",
        "spec.template",
    );
}

#[test]
fn rule_actions_need_handler_and_instances() {
    assert_error_at(
        Kind::Rule,
        "actions:\n- instances: [a]\n",
        "spec.actions[0].handler",
    );
    assert_error_at(
        Kind::Rule,
        "actions:\n- handler: h\n",
        "spec.actions[0].instances",
    );
    assert_error_at(
        Kind::Rule,
        "actions:\n- handler: h\n  instances: [\"Bad_Name\"]\n",
        "spec.actions[0].instances[0]",
    );
    assert_error_at(
        Kind::Rule,
        "actions:\n- handler: a.b.c.d\n  instances: [i]\n",
        "spec.actions[0].handler",
    );
    assert_error_at(
        Kind::Rule,
        "actions:\n- handler: h\n  instances: [i]\n  name: x\n- handler: h\n  instances: [i]\n  name: x\n",
        "spec.actions[1].name",
    );
    assert_error_at(
        Kind::Rule,
        "requestHeaderOperations:\n- values: [a]\n",
        "spec.requestHeaderOperations[0].name",
    );
    assert_error_at(
        Kind::Rule,
        "sampling:\n  random:\n    percentSampled:\n      numerator: 101\n",
        "spec.sampling.random.percentSampled.numerator",
    );
}

#[test]
fn attribute_types_are_istio_types() {
    assert_error_at(
        Kind::AttributeManifest,
        "attributes:\n  a.b:\n    description: x\n",
        "spec.attributes.a.b.valueType",
    );
    let errs = errors(
        Kind::AttributeManifest,
        "attributes:\n  a.b:\n    valueType: BAD_TYPE\n",
    );
    assert!(
        errs[0].starts_with("spec.attributes.a.b.valueType: unknown variant `BAD_TYPE`"),
        "{errs:?}"
    );
    assert!(errs[0].contains("IP_ADDRESS"), "{errs:?}");
}
